"""Mailbox access (POP3, secure POP3, IMAP, secure IMAP) through one Dovecot per node.

- `listeners`: which of the four listeners are switched on right now (HOME/run/).
- `sqlconf`: how Dovecot reaches mailyard's store (dovecot-sqlite or dovecot-pgsql).
- `config`: the text of dovecot.conf, a pure function of the node, settings and listeners.
- `master`: the running Dovecot master: its pid file, its listening ports, `doveadm reload`.
- `dovecot`: the entry points the service layer calls (render, exec_argv, version, control).
"""

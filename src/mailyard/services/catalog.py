"""What each service of a node is: its supervisor program, listeners, entry point and version.

An entry point is `module:function`, called with the node's Home inside the supervised child
after the memory limit is applied. A Python service's function runs until SIGTERM; a daemon's
function (`exec_`) renders its configuration and returns the argv to exec (Dovecot, spamd,
clamd, freshclam). A service whose `control` is set shares a program with others (the four
Dovecot listeners) and handles start/stop/reload through that hook instead of supervisord.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    program: str  # supervisord program name
    listeners: tuple[str, ...]  # names in home.STANDARD_PORTS that must accept connections
    entry: str  # "module:function(home)": runs the service, or returns argv when `exec_`
    version: str  # "module:function() -> str"
    exec_: bool = False
    control: str | None = None  # "module:function(home, service, action)" for shared programs
    description: str = ""
    # "module:function(home) -> Path": unix sockets it must be listening on (spamd, clamd)
    sockets: tuple[str, ...] = ()
    # Part of the node's machinery, not a service of the guide: no settings of its own (always
    # started with the supervisor, restarted when it stops), not in `mailyard status`.
    internal: bool = False


SERVICES: dict[str, ServiceSpec] = {s.name: s for s in (
    ServiceSpec("smtp", "smtp", ("smtp",), "mailyard.smtp.service:run_smtp",
                "mailyard.smtp.service:version", description="inbound SMTP, port 25"),
    ServiceSpec("submission", "submission", ("submission", "smtps"),
                "mailyard.smtp.service:run_submission", "mailyard.smtp.service:version",
                description="alternate SMTP for users: submission and SMTPS"),
    ServiceSpec("send", "send", (), "mailyard.delivery.service:run",
                "mailyard.delivery.service:version",
                description="queue manager: local and remote delivery, bounces"),
    ServiceSpec("pop3", "dovecot", ("pop3",), "mailyard.mda.dovecot:exec_argv",
                "mailyard.mda.dovecot:version", exec_=True,
                control="mailyard.mda.dovecot:control", description="POP3 (Dovecot)"),
    ServiceSpec("pop3s", "dovecot", ("pop3s",), "mailyard.mda.dovecot:exec_argv",
                "mailyard.mda.dovecot:version", exec_=True,
                control="mailyard.mda.dovecot:control", description="secure POP3 (Dovecot)"),
    ServiceSpec("imap", "dovecot", ("imap",), "mailyard.mda.dovecot:exec_argv",
                "mailyard.mda.dovecot:version", exec_=True,
                control="mailyard.mda.dovecot:control", description="IMAP (Dovecot)"),
    ServiceSpec("imaps", "dovecot", ("imaps",), "mailyard.mda.dovecot:exec_argv",
                "mailyard.mda.dovecot:version", exec_=True,
                control="mailyard.mda.dovecot:control", description="secure IMAP (Dovecot)"),
    # spamd and clamd listen on unix sockets only the mail owner's group reaches: over TCP
    # any local user could teach spamd's Bayes (TELL) or stop clamd (SHUTDOWN).
    ServiceSpec("spamd", "spamd", (), "mailyard.filters.spamd:exec_argv",
                "mailyard.filters.spamd:version", exec_=True,
                description="SpamAssassin daemon", sockets=("mailyard.filters.spamd:socket_path",)),
    ServiceSpec("clamd", "clamd", (), "mailyard.filters.clamd:exec_argv",
                "mailyard.filters.clamd:version", exec_=True, description="ClamAV daemon",
                sockets=("mailyard.filters.clamd:socket_path",)),
    ServiceSpec("freshclam", "freshclam", (), "mailyard.filters.freshclam:exec_argv",
                "mailyard.filters.freshclam:version", exec_=True,
                description="ClamAV signature updates"),
    ServiceSpec("panel", "panel", ("panel",), "mailyard.panel.service:run",
                "mailyard.panel.service:version", description="web panel and JSON API"),
    # issue 19: sendmail for every local user, through a unix socket (smtp/sendmail_daemon.py)
    ServiceSpec("sendmail", "sendmail", (), "mailyard.smtp.sendmail_daemon:run",
                "mailyard.smtp.sendmail_daemon:version",
                description="queues sendmail's mail for local users",
                sockets=("mailyard.smtp.sendmail_daemon:socket_path",)),
    # The panel runs unprivileged and asks this root helper for the few things that need root
    # (services/helper.py lists them); it listens on a unix socket only the panel reaches.
    ServiceSpec("helper", "helper", (), "mailyard.services.helper_main:run",
                "mailyard.services.helper_main:version", internal=True,
                description="the panel's root helper",
                sockets=("mailyard.services.helper:socket_path",)),
)}

"""A mailbox at its quota is refused at RCPT by the running smtp service (issue 19.4)."""

from __future__ import annotations

from smtp_helpers import JOE, RawClient
from tests.smtp.smtp_helpers import give_store_to_mail_owner

from mailyard import quota
from mailyard.home import Home
from mailyard.store import accounts
from mailyard.store.db import dispose_all


def test_a_full_mailbox_is_refused_at_rcpt_with_552(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    accounts.set_mailbox(node, JOE, quota_mb=1)
    dispose_all()
    give_store_to_mail_owner(node)
    maildir = node.maildir(JOE)
    quota.write_new(maildir, 1)
    start("smtp")

    def rcpt() -> bytes:
        c = RawClient(node.port("smtp"))
        assert c.code() == 220
        c.send(b"EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\n")
        c.reply()
        c.reply()
        c.send(f"RCPT TO:<{JOE}>\r\n".encode())
        reply = c.reply()
        c.close()
        return reply

    assert rcpt().startswith(b"250 ")
    with open(maildir / quota.MAILDIRSIZE, "a") as f:
        f.write(f"{quota.MB} 1\n")  # full, as Dovecot records an APPEND
    refused = rcpt()
    assert refused.startswith(b"552 5.2.2 ") and b"mailbox is full" in refused, refused

"""The other half of "one accounting" (issue 19.4) with the real Dovecot: an IMAP COPY over the
quota is refused, and an expunge that Dovecot records in maildirsize frees room that our
delivery sees, re-arming the 90 % warning."""

from __future__ import annotations

import os

from mda_support import IMAP, PASSWORD, RunningDovecot

# the fixtures and the delivery helper of the quota tests next door, not a second copy
from test_mda_quota import ALICE, deliver, home, running  # noqa: F401

from mailyard import quota
from mailyard.delivery.quota_warning import MARKER, WARN_PERCENT
from mailyard.home import Home
from mailyard.services.privileges import mail_owner
from mailyard.store import accounts


def give_to_mail_owner(node: Home) -> None:
    """As the send service (the mail owner) would have written it."""
    uid, gid = mail_owner()
    for path in [node.maildir(ALICE), *node.maildir(ALICE).rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)


def warnings(node: Home) -> int:
    subject = f"Subject: Your mailbox is {WARN_PERCENT} % full".encode()
    maildir = node.maildir(ALICE)  # new/, and cur/ once Dovecot has seen them
    return sum(subject in p.read_bytes() for sub in ("new", "cur")
               for p in (maildir / sub).iterdir())


def test_copy_over_the_quota_is_refused_and_an_expunge_rearms_the_warning(
        home: Home, running: RunningDovecot) -> None:  # noqa: F811
    accounts.set_mailbox(home, ALICE, quota_mb=1)
    maildir = home.maildir(ALICE)
    assert deliver(home, 960_000) == "success"  # 92 %: warned once
    assert warnings(home) == 1 and (maildir / MARKER).exists()
    give_to_mail_owner(home)
    client = IMAP(running.port("imap"))
    client.login(ALICE, PASSWORD)
    client.select("INBOX")
    typ, found = client.search(None, "SUBJECT", "filler")
    assert typ == "OK" and found[0], found
    big = found[0].split()[0]
    typ, data = client.copy(big, "Trash")
    assert typ == "NO" and b"OVERQUOTA" in b" ".join(d for d in data if d).upper(), data
    before = quota.usage(maildir)
    client.store(big, "+FLAGS", "\\Deleted")
    client.expunge()
    client.logout()
    after = quota.usage(maildir)
    assert before is not None and after is not None and after < before - 900_000  # Dovecot's line
    assert deliver(home, 1_000) == "success"  # back under 90 %: the marker goes
    assert not (maildir / MARKER).exists()
    assert deliver(home, 960_000) == "success"  # past again: warned again
    assert warnings(home) == 2

"""Mailbox quotas (issue 19.4), one accounting for all: the Maildir++ maildirsize that our
delivery appends to and Dovecot's quota plugin reads. A full mailbox is refused at RCPT
(552 5.2.2), a message that no longer fits waits at delivery, and Dovecot refuses an IMAP
APPEND over the quota."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator

import pytest
from mda_support import (
    DOMAIN,
    IMAP,
    PASSWORD,
    RunningDovecot,
    make_node,
    short_tmp,
    start_dovecot,
    stop_dovecot,
)

from mailyard import quota
from mailyard.delivery.local import LocalContext, deliver_local, mailbox_scanner
from mailyard.home import Home
from mailyard.queue import Envelope, Queue
from mailyard.services.privileges import mail_owner
from mailyard.smtp import policy as P
from mailyard.smtp.directory import Directory
from mailyard.store import accounts
from mailyard.store.accounts import ensure_all_maildirs
from mailyard.store.settings_store import load_settings, set_setting

MB = 1024 * 1024
ALICE = f"alice@{DOMAIN}"


@pytest.fixture
def home() -> Iterator[Home]:
    root = short_tmp("mda-quota")
    node = make_node(root, users=("alice",))
    set_setting(node, "spam.bayes_imap_training", False)
    ensure_all_maildirs(node)
    yield node
    shutil.rmtree(root, ignore_errors=True)


def deliver(home: Home, size: int, queued_at: float | None = None) -> str:
    ctx = LocalContext(home, load_settings(home), Queue(home.queue_dir), mailbox_scanner())
    body = b"Subject: filler\r\n\r\n" + b"x" * size + b"\r\n"
    envelope = Envelope(sender="a@remote.test", recipients=[ALICE])
    envelope.time = queued_at if queued_at is not None else time.time()
    return asyncio.run(deliver_local(ctx, envelope, ALICE, body)).kind


def rcpt_reply(home: Home) -> str:
    async def ask() -> str:
        limit, used = await Directory(home).quota_use(ALICE)
        refusal = P.quota_refusal(ALICE, limit, used)
        return "accepted" if refusal is None else f"{refusal.code} {refusal.status}"
    return asyncio.run(ask())


def test_deliveries_are_counted_and_a_full_mailbox_is_refused_then_waits(home: Home) -> None:
    accounts.set_mailbox(home, ALICE, quota_mb=1)
    maildir = home.maildir(ALICE)
    assert rcpt_reply(home) == "accepted"
    assert deliver(home, 600_000) == "success"
    used = quota.usage(maildir)
    assert used is not None and 600_000 < used < 601_000  # counted in the file Dovecot reads
    assert deliver(home, 600_000) == "deferral"  # does not fit: waits for room ...
    assert deliver(home, 600_000, queued_at=time.time() - 2 * 86400) == "failure"  # ... a day
    assert deliver(home, 300_000) == "success"  # what fits still goes in
    assert rcpt_reply(home) == "accepted"  # 0.9 MB of 1 MB used
    with open(maildir / "maildirsize", "a") as f:  # an IMAP APPEND fills the rest, as
        f.write(f"{MB - quota.usage(maildir)} 1\n")  # Dovecot's quota plugin records it
    assert rcpt_reply(home) == "552 5.2.2"
    accounts.set_mailbox(home, ALICE, quota_mb=0)
    assert rcpt_reply(home) == "accepted"  # no quota, no check


@pytest.fixture
def running(home: Home) -> Iterator[RunningDovecot]:
    node = start_dovecot(home)
    yield node
    stop_dovecot(node)


def test_dovecot_refuses_an_append_over_the_quota(home: Home, running: RunningDovecot) -> None:
    accounts.set_mailbox(home, ALICE, quota_mb=1)
    assert deliver(home, 900_000) == "success"
    uid, gid = mail_owner()  # as the send service (the mail owner) would have written it
    for path in [home.maildir(ALICE), *home.maildir(ALICE).rglob("*")]:
        os.chown(path, uid, gid)
    client = IMAP(running.port("imap"))
    client.login(ALICE, PASSWORD)
    typ, data = client.getquotaroot("INBOX")
    assert typ == "OK", data
    small = b"Subject: small\r\n\r\nfits\r\n"
    assert client.append("INBOX", None, None, small)[0] == "OK"
    big = b"Subject: big\r\n\r\n" + b"y" * 300_000 + b"\r\n"
    typ, data = client.append("INBOX", None, None, big)
    assert typ == "NO" and b"OVERQUOTA" in b" ".join(d for d in data if d).upper(), data
    client.logout()

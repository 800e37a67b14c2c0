"""`mailyard queue reset` on a supervised node (guide 7.3.1): the CLI stops the services that
touch the queue around the move and starts them again, and the fresh queue takes mail."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_helpers import JOE, give_store_to_mail_owner, wait_until

from mailyard.home import Home
from mailyard.queue import Envelope, Queue
from mailyard.services import control
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_many

ALL = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd", "clamd",
       "freshclam", "panel")
AROUND = ("smtp", "submission", "send")
MAILYARD = Path(sys.executable).parent / "mailyard"


@pytest.fixture
def supervised(node: Home) -> Iterator[Home]:
    set_many(node, {f"service.{name}.start_on_boot": name in AROUND for name in ALL})
    # far.test goes to a port where nothing listens: its message waits in the queue
    set_many(node, {"send.smtp_routes": ["far.test:127.0.0.1:9"]})
    dispose_all()
    give_store_to_mail_owner(node)
    try:
        control.up(node, timeout=90)
        yield node
    finally:
        control.down(node)
        dispose_all()


def pids(home: Home) -> dict[str, int | None]:
    return {s.name: s.pid for s in control.status(home, with_versions=False)
            if s.name in AROUND and s.state == "RUNNING"}


def test_queue_reset_stops_and_starts_the_services_around_it(supervised: Home) -> None:
    home = supervised
    with Queue(home.queue_dir).open_message() as w:
        w.write(b"From: a@example.org\r\nTo: b@far.test\r\nSubject: stuck\r\n\r\nwaiting\r\n")
        stuck = w.commit(Envelope(sender="a@example.org", recipients=["b@far.test"]))
    before = pids(home)
    assert set(before) == set(AROUND)

    env = dict(os.environ, MAILYARD_HOME=str(home.root))
    out = subprocess.run([str(MAILYARD), "queue", "reset", "--yes"], env=env,
                         capture_output=True, text=True, timeout=300)
    # The send service holds the queue lock while it runs: the move succeeding shows it was
    # stopped first; new process ids show every service was started again.
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(1 messages); a fresh queue is in place" in out.stdout
    bad = home.queue_dir.with_name(home.queue_dir.name + ".bad")
    assert stuck in Queue(bad).ids("mess") or stuck in Queue(bad).ids("todo")
    wait_until(lambda: len(pids(home)) == len(AROUND), what="the services to run again")
    after = pids(home)
    assert all(after[name] != before[name] for name in AROUND), (before, after)
    assert not any(Queue(home.queue_dir).ids(part) for part in ("mess", "todo"))

    # the fresh queue takes mail and the restarted send service delivers it
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=60) as s:
        s.ehlo()
        s.mail("a@example.org")
        s.rcpt(JOE)
        assert s.data(b"Subject: after the reset\r\n\r\nhello\r\n")[0] == 250
    new = home.maildir(JOE) / "new"
    wait_until(lambda: new.is_dir() and any(b"after the reset" in p.read_bytes()
                                            for p in new.iterdir()),
               what="delivery through the fresh queue")

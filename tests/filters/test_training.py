"""Bayes IMAP training with the real spamd: the right database, the daily limit, the report."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import date, datetime
from pathlib import Path

import pytest

from mailyard.filters import spamd, training
from mailyard.home import Home
from mailyard.mailboxes import ensure_maildir, folder_dir
from mailyard.services.privileges import chown_path
from mailyard.store import accounts
from mailyard.store.settings_store import load_settings, set_setting

DAY1 = date(2025, 3, 10)
DAY2 = date(2025, 3, 11)
WORDS = ("replica watches discount pharmacy casino bonus lottery winner crypto "
         "investment guaranteed returns act now limited offer").split()


def spam_text(n: int) -> bytes:
    body = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(40))
    return (f"From: promo{n}@spam.example.net\r\nTo: someone@example.com\r\n"
            f"Subject: offer {n}\r\nMessage-ID: <spam-{n}@spam.example.net>\r\n"
            f"Date: Mon, 10 Mar 2025 10:0{n % 10}:00 +0000\r\n\r\n{body}\r\n").encode()


def ham_text(n: int) -> bytes:
    return (f"From: colleague{n}@example.org\r\nTo: someone@example.com\r\n"
            f"Subject: minutes of meeting {n}\r\nMessage-ID: <ham-{n}@example.org>\r\n"
            f"Date: Mon, 10 Mar 2025 11:0{n % 10}:00 +0000\r\n\r\n"
            f"Attached are the minutes of our planning meeting number {n}. The budget "
            f"review moves to Thursday; please bring the quarterly figures.\r\n").encode()


def drop(home: Home, address: str, folder: str, messages: list[bytes]) -> None:
    """Put messages into a folder as an IMAP client moving them there would (cur/, seen)."""
    target = folder_dir(home.maildir(address), folder) / "cur"
    for i, data in enumerate(messages):
        path = target / f"{1700000000 + i}.M{i}P{os.getpid()}.test:2,S"
        path.write_bytes(data)
        chown_path(path)  # the mail owner's file, as Dovecot (running as that user) leaves it
        os.utime(path, (1700000000 + i, 1700000000 + i))


def count(home: Home, address: str, folder: str) -> int:
    return len(training.folder_messages(folder_dir(home.maildir(address), folder)))


def bayes_counts(home: Home, dbpath: Path) -> tuple[int, int]:
    """(nspam, nham) of a Bayes database, read by sa-learn --dump magic as spamd's user."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["runuser", "-u", spamd.spamd_user()[0], "--"]
    out = subprocess.run(prefix + ["sa-learn", f"--dbpath={dbpath}",
                                   f"--siteconfigpath={spamd.site_dir(home)}",
                                   "--dump", "magic"],
                         capture_output=True, text=True, timeout=300).stdout
    numbers = {name: int(value) for value, name in re.findall(
        r"^\S+\s+\S+\s+(\d+)\s+\S+\s+non-token data: (nspam|nham)$", out, re.M)}
    return numbers.get("nspam", 0), numbers.get("nham", 0)


@pytest.fixture(scope="module")
def trained_home(module_home: Home) -> Home:
    accounts.add_domain(module_home, "example.com")
    for user in ("bob", "carol"):
        accounts.add_mailbox(module_home, f"{user}@example.com", f"password-of-{user}-1")
        ensure_maildir(module_home, f"{user}@example.com", training=True)
    set_setting(module_home, "spam.bayes_imap_limit", 3)
    return module_home


@pytest.fixture(scope="module")
def server(trained_home, spamd_server):  # type: ignore[no-untyped-def]
    return spamd_server


def test_training_learns_into_the_mailbox_database_up_to_the_daily_limit(server, trained_home):
    home = trained_home
    settings = load_settings(home)
    bob_db = spamd.bayes_dbpath(home, settings, "bob@example.com")
    drop(home, "bob@example.com", "Learn Spam", [spam_text(n) for n in range(5)])
    drop(home, "bob@example.com", "Learn Ham", [ham_text(n) for n in range(2)])

    report = training.train(home, DAY1)
    bob = next(m for m in report.mailboxes if m.address == "bob@example.com")
    assert (bob.spam_learned, bob.ham_learned, bob.purged_over_limit, bob.error) == (3, 2, 2, "")
    assert bayes_counts(home, bob_db) == (3, 2)  # the two over the limit were not learned
    assert count(home, "bob@example.com", "Learn Spam") == 0  # but purged with the rest
    assert count(home, "bob@example.com", "Learn Ham") == 0
    # carol had nothing to learn, and her own database did not move
    assert bayes_counts(home, spamd.bayes_dbpath(home, settings, "carol@example.com")) == (0, 0)

    # the same day again: the limit is used up, nothing more is learned, the folder is emptied
    drop(home, "bob@example.com", "Learn Spam", [spam_text(n) for n in range(5, 7)])
    again = training.train(home, DAY1)
    bob = next(m for m in again.mailboxes if m.address == "bob@example.com")
    assert (bob.spam_learned, bob.purged_over_limit) == (0, 2)
    assert count(home, "bob@example.com", "Learn Spam") == 0
    assert bayes_counts(home, bob_db) == (3, 2)

    # the next day there is room again
    drop(home, "bob@example.com", "Learn Spam", [spam_text(n) for n in range(7, 9)])
    next_day = training.train(home, DAY2)
    bob = next(m for m in next_day.mailboxes if m.address == "bob@example.com")
    assert (bob.spam_learned, bob.purged_over_limit) == (2, 0)
    assert count(home, "bob@example.com", "Learn Spam") == 0
    assert bayes_counts(home, bob_db) == (5, 2)

    log = (home.service_log_dir("spam-train") / "current").read_text()
    assert ("mailbox=bob@example.com db=mailbox spam_learned=3 ham_learned=2 already_known=0 "
            "skipped_too_big=0 purged_over_limit=2") in log
    assert "training done: learned=2 mailboxes=2" in log


def test_a_message_learned_before_counts_as_known_and_is_still_removed(server, trained_home):
    home = trained_home
    drop(home, "bob@example.com", "Learn Spam", [spam_text(0)])  # learned in the test above
    report = training.train(home, date(2025, 3, 12))
    bob = next(m for m in report.mailboxes if m.address == "bob@example.com")
    assert (bob.spam_learned, bob.already_known) == (0, 1)
    assert count(home, "bob@example.com", "Learn Spam") == 0


def test_spamd_down_leaves_the_messages_in_the_folders(trained_home):
    drop(trained_home, "carol@example.com", "Learn Ham", [ham_text(7)])
    # spamd unreachable: its socket moved aside (spamd itself keeps listening on it)
    sock = spamd.socket_path(trained_home)
    aside = sock.with_name(sock.name + ".aside")
    os.rename(sock, aside)
    try:
        report = training.train(trained_home, date(2025, 3, 13))
    finally:
        os.rename(aside, sock)
    carol = next(m for m in report.mailboxes if m.address == "carol@example.com")
    assert "spamd unavailable" in carol.error
    assert count(trained_home, "carol@example.com", "Learn Ham") == 1
    # and the message is learned on a later run, when spamd is back (see the next test)


def test_with_the_global_database_every_mailbox_trains_the_one_database(server, trained_home):
    home = trained_home
    set_setting(home, "spam.bayes_global", True)
    server.reload()
    try:
        settings = load_settings(home)
        global_db = spamd.bayes_dbpath(home, settings, "carol@example.com")
        assert global_db == spamd.global_bayes_dir(home) / "bayes"
        carol_own = spamd.user_dir(home, "carol@example.com") / "bayes"
        bob_own = spamd.user_dir(home, "bob@example.com") / "bayes"
        bob_before = bayes_counts(home, bob_own)
        drop(home, "carol@example.com", "Learn Spam", [spam_text(20), spam_text(21)])
        report = training.train(home, date(2025, 3, 14))
        carol = next(m for m in report.mailboxes if m.address == "carol@example.com")
        assert (carol.spam_learned, carol.ham_learned, carol.error) == (2, 1, "")
        assert bayes_counts(home, global_db) == (2, 1)
        assert bayes_counts(home, carol_own) == (0, 0)
        assert bayes_counts(home, bob_own) == bob_before
        log = (home.service_log_dir("spam-train") / "current").read_text()
        assert "mailbox=carol@example.com db=global spam_learned=2 ham_learned=1" in log
    finally:
        set_setting(home, "spam.bayes_global", False)
        server.reload()


def test_training_off_learns_nothing_and_says_so(server, trained_home):
    set_setting(trained_home, "spam.bayes_imap_training", False)
    try:
        drop(trained_home, "bob@example.com", "Learn Spam", [spam_text(30)])
        report = training.train(trained_home, date(2025, 3, 15))
        assert report.mailboxes == [] and "training is off" in report.note
        assert count(trained_home, "bob@example.com", "Learn Spam") == 1
    finally:
        set_setting(trained_home, "spam.bayes_imap_training", True)


@pytest.mark.parametrize(("last", "now", "due"), [
    (None, datetime(2025, 3, 10, 2, 59), False),  # before the training hour
    (None, datetime(2025, 3, 10, 3, 0), True),
    ({"date": "2025-03-10"}, datetime(2025, 3, 10, 23, 0), False),  # done today
    ({"date": "2025-03-09"}, datetime(2025, 3, 10, 3, 30), True),
    ({"date": "2025-03-09"}, datetime(2025, 3, 10, 1, 0), False),
])
def test_the_daily_run_is_due_once_a_day_from_the_training_hour(last, now, due):
    assert training.is_due(last, now) is due


@pytest.mark.parametrize(("waiting", "done_today", "limit", "now", "left"), [
    (5, 0, 3, 3, 2), (5, 3, 3, 0, 5), (2, 1, 3, 2, 0), (4, 0, 0, 0, 4), (0, 0, 3, 0, 0),
])
def test_plan_takes_the_oldest_messages_within_the_limit(waiting, done_today, limit, now, left):
    messages = [Path(f"m{i}") for i in range(waiting)]
    todo, over = training.plan(messages, done_today, limit)
    assert todo == messages[:now] and over == messages[now:] and len(over) == left


def test_a_second_run_at_the_same_time_does_nothing_and_says_so(own_home):
    import fcntl

    ensure_maildir(own_home, "bob@example.com", training=True)
    lock = training.training_dir(own_home) / "train.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        report = training.train(own_home, DAY1)
    assert report.note == "another training run is in progress"
    assert report.mailboxes == [] and training.last_run(own_home) is None


def test_the_daily_hook_runs_once_per_day(own_home):
    """No mailboxes here: the run itself is trivial; what matters is when it happens."""
    first = training.train_if_due(own_home, datetime(2025, 3, 10, 4, 0))
    assert first is not None
    assert training.last_run(own_home)["date"] == "2025-03-10"
    assert training.train_if_due(own_home, datetime(2025, 3, 10, 22, 0)) is None
    assert training.train_if_due(own_home, datetime(2025, 3, 11, 3, 5)) is not None

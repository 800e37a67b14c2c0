"""What the spam settings do to the score the real spamd gives a real message (guide 6.1):
auto-whitelisting, Bayes auto-learning, the global blacklist and trusted networks, each off
and then on for the same kind of message."""

from __future__ import annotations

import email
import os
import re
import subprocess
from collections.abc import Iterator
from email import policy

import pytest
from tests.filters.helpers import Spamd, message, reachable_home, run

from mailyard.filters import prefs, spamc, spamd
from mailyard.home import Home
from mailyard.services.apply_settings import change_settings
from mailyard.store import accounts
from mailyard.store.settings_store import load_settings

BOB = "bob@example.com"
BODY_MARK = "mailyard-behaviour-body-5521"  # a site rule worth 20 points (LOCAL_BODY_MARK)
SUBJECT_MARK = "mailyard-behaviour-subject-5521"  # a header rule worth 20 (LOCAL_HEAD_MARK)
RELAY = ("Received: from relay.example.net (relay.example.net [192.0.2.7])\r\n"
         "\tby mx.example.test (mailyard) with ESMTP id 1;\r\n"
         "\tMon, 24 Nov 2025 10:00:00 +0000\r\n")


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Home, Spamd]]:
    with reachable_home() as home:
        accounts.add_domain(home, "example.com")
        accounts.add_mailbox(home, BOB, "password-of-bob-1")
        for preference, value in (
                ("body", f"LOCAL_BODY_MARK /{BODY_MARK}/"), ("score", "LOCAL_BODY_MARK 20"),
                ("header", f"LOCAL_HEAD_MARK Subject =~ /{SUBJECT_MARK}/"),
                ("score", "LOCAL_HEAD_MARK 20")):
            prefs.add_preference(home, "global", preference, value, render=False)
        spamd.render(home)
        daemon = Spamd(home)
        daemon.start()
        try:
            yield home, daemon
        finally:
            daemon.stop()


def configure(node: tuple[Home, Spamd], **values: object) -> None:
    """Store settings (keys with __ for dots) and reload spamd as the node's reload does."""
    home, daemon = node
    change_settings(home, {k.replace("__", "."): v for k, v in values.items()}, apply=False)
    daemon.reload()


def scan(node: tuple[Home, Spamd], data: bytes) -> tuple[float, set[str], str]:
    """(score, rules that fired, autolearn verdict) as spamd marks the message for bob."""
    home, _ = node
    result = run(spamc.process(spamd.socket_path(home), data, timeout=120, user=BOB))
    assert result.message is not None
    status = str(email.message_from_bytes(result.message, policy=policy.default)
                 ["X-Spam-Status"] or "")
    status = re.sub(r",\s+", ",", " ".join(status.split()))  # spamd folds the test list
    tests = re.search(r"tests=(\S*)", status)
    learn = re.search(r"autolearn=(\S+)", status)
    return (result.score, set(tests.group(1).split(",")) if tests else set(),
            learn.group(1) if learn else "")


def note(sender: str, marked: bool = False, n: int = 0, received: str = "") -> bytes:
    body = (f"Please see {BODY_MARK} offer number {n} today." if marked
            else f"Hello, this is an ordinary note number {n} about lunch on Friday.")
    subject = f"{SUBJECT_MARK} {n}" if marked else f"lunch {n}"
    return received.encode() + message(body, subject=subject, sender=sender, to=BOB,
                                       msgid=f"<behaviour-{sender}-{n}@example.org>")


def nspam(home: Home) -> int:
    """How many spam messages bob's Bayes database has learned (sa-learn --dump magic)."""
    dbpath = spamd.bayes_dbpath(home, load_settings(home), BOB)
    prefix = ["runuser", "-u", spamd.spamd_user()[0], "--"] if os.geteuid() == 0 else []
    out = subprocess.run(prefix + ["sa-learn", f"--dbpath={dbpath}",
                                   f"--siteconfigpath={spamd.site_dir(home)}", "--dump",
                                   "magic"], capture_output=True, text=True, timeout=300).stdout
    found = re.search(r"^\S+\s+\S+\s+(\d+)\s+\S+\s+non-token data: nspam$", out, re.M)
    return int(found.group(1)) if found else 0


def test_auto_whitelisting_pulls_a_senders_score_toward_its_past(node) -> None:  # type: ignore[no-untyped-def]
    later: dict[bool, tuple[float, set[str], str]] = {}
    for on, sender in ((False, "off@history.example"), (True, "on@history.example")):
        configure(node, spam__auto_whitelist=on, spam__bayes_auto_learn=False)
        marked, _, _ = scan(node, note(sender, marked=True, n=1))
        assert marked >= 30
        later[on] = scan(node, note(sender, n=2))  # an ordinary note from the same sender
    off_score, off_tests, _ = later[False]
    on_score, on_tests, _ = later[True]
    assert "AWL" not in off_tests and off_score < 5
    assert "AWL" in on_tests and on_score > off_score + 5  # pulled up toward its 40 points


def test_bayes_auto_learning_learns_clear_spam_only_when_on(node) -> None:  # type: ignore[no-untyped-def]
    home, _ = node
    configure(node, spam__bayes=True, spam__bayes_auto_learn=False, spam__auto_whitelist=False)
    before = nspam(home)
    _, _, verdict = scan(node, note("a@learn.example", marked=True, n=3))
    assert verdict != "spam" and nspam(home) == before
    configure(node, spam__bayes_auto_learn=True)
    _, _, verdict = scan(node, note("b@learn.example", marked=True, n=4))
    assert verdict == "spam"
    assert nspam(home) == before + 1


def test_the_global_blacklist_marks_a_senders_ordinary_note(node) -> None:  # type: ignore[no-untyped-def]
    configure(node, spam__blacklist="", spam__auto_whitelist=False, spam__bayes_auto_learn=False)
    plain, tests, _ = scan(node, note("someone@listed.example", n=5))
    assert plain < 5 and "USER_IN_BLOCKLIST" not in tests
    configure(node, spam__blacklist="listed.example")
    listed, tests, _ = scan(node, note("someone@listed.example", n=6))
    assert "USER_IN_BLOCKLIST" in tests and listed > plain + 50


def test_trusted_networks_make_a_relay_trusted(node) -> None:  # type: ignore[no-untyped-def]
    configure(node, spam__trusted_networks="", spam__auto_whitelist=False,
              spam__bayes_auto_learn=False, spam__blacklist="")
    untrusted, tests, _ = scan(node, note("c@relay.example", n=7, received=RELAY))
    assert "ALL_TRUSTED" not in tests
    configure(node, spam__trusted_networks="192.0.2.0/24")
    trusted, tests, _ = scan(node, note("c@relay.example", n=8, received=RELAY))
    assert "ALL_TRUSTED" in tests and trusted < untrusted

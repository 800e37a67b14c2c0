"""Mailbox-level scanning with the real spamd: per-mailbox preferences, marking and filing."""

from __future__ import annotations

import dataclasses
import email
from email import policy
from email.message import EmailMessage

import pytest
from tests.filters.helpers import GTUBE, message, run, settings_of

from mailyard.filters import prefs, spamd
from mailyard.filters.mailbox import MailboxVerdict, scan_for_mailbox
from mailyard.home import Home
from mailyard.store import accounts
from mailyard.store.settings_store import set_setting

PHRASE = "mailyard-marker-phrase-7731"  # matched by a site-wide custom rule scoring 20


@pytest.fixture(scope="module")
def mailboxes(module_home: Home) -> Home:
    """bob files spam in Spam (the default), carol in INBOX, dave discards it."""
    accounts.add_domain(module_home, "example.com")
    for user in ("bob", "carol", "dave"):
        accounts.add_mailbox(module_home, f"{user}@example.com", f"password-of-{user}-1")
    accounts.set_spam_action(module_home, "carol@example.com", "inbox")
    accounts.set_spam_action(module_home, "dave@example.com", "discard")
    # a site-wide custom rule with a modest score, and a whitelisted sender
    prefs.add_preference(module_home, "global", "body", f"LOCAL_MARKER /{PHRASE}/", render=False)
    prefs.add_preference(module_home, "global", "score", "LOCAL_MARKER 20", render=False)
    set_setting(module_home, "spam.whitelist", ["friend@example.net"])
    return module_home


@pytest.fixture(scope="module")
def scanner(mailboxes, spamd_server):  # type: ignore[no-untyped-def]
    return spamd_server


def scan(home: Home, address: str, data: bytes, **overrides: object) -> MailboxVerdict:
    return run(scan_for_mailbox(home, settings_of(home, **overrides), address, data))


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def test_gtube_lands_in_the_spam_folder_with_the_subject_rewritten(scanner, mailboxes):
    verdict = scan(mailboxes, "bob@example.com", message(GTUBE, subject="cheap watches"))
    assert (verdict.folder, verdict.discard, verdict.scanned) == ("Spam", False, True)
    assert verdict.score is not None and verdict.score >= 1000
    mail = parsed(verdict.message)
    assert mail["Subject"] == "--SPAM-- cheap watches"
    assert mail["X-Spam-Flag"] == "YES"


def test_spam_goes_to_the_inbox_or_is_discarded_as_the_mailbox_chose(scanner, mailboxes):
    carol = scan(mailboxes, "carol@example.com", message(GTUBE))
    assert (carol.folder, carol.discard) == ("INBOX", False)
    assert parsed(carol.message)["X-Spam-Flag"] == "YES"  # still marked
    dave = scan(mailboxes, "dave@example.com", message(GTUBE))
    assert dave.discard is True


def test_a_clean_message_goes_to_the_inbox_marked_as_scanned(scanner, mailboxes):
    verdict = scan(mailboxes, "bob@example.com", message())
    assert (verdict.folder, verdict.discard, verdict.scanned) == ("INBOX", False, True)
    mail = parsed(verdict.message)
    assert mail["X-Spam-Status"].startswith("No, score=")
    assert mail["Subject"] == "lunch"
    assert "Hello, this is an ordinary note" in mail.get_content()


def test_scanning_off_passes_the_message_through_unchanged(scanner, mailboxes):
    original = message(GTUBE)
    verdict = scan(mailboxes, "bob@example.com", original, spam__mailbox_scanning=False)
    assert verdict == MailboxVerdict(original, "INBOX", False)


def test_spamd_down_delivers_unchanged_to_the_inbox(mailboxes, tmp_path):
    # the same node seen from a home whose run/ has no spamd socket: spamd is 'down'
    for sub in ("run", "var"):
        (tmp_path / sub).mkdir()
    elsewhere = dataclasses.replace(mailboxes, root=tmp_path)
    original = message(GTUBE)
    verdict = scan(elsewhere, "bob@example.com", original)
    assert verdict == MailboxVerdict(original, "INBOX", False)


def test_a_custom_rule_marks_spam_but_not_from_a_whitelisted_sender(scanner, mailboxes):
    body = f"Please read this: {PHRASE}"
    stranger = scan(mailboxes, "bob@example.com",
                    message(body, sender="stranger@example.net", msgid="<s-1@example.net>"))
    assert stranger.folder == "Spam", parsed(stranger.message)["X-Spam-Status"]
    assert "LOCAL_MARKER" in parsed(stranger.message)["X-Spam-Status"]
    friend = scan(mailboxes, "bob@example.com",
                  message(body, sender="friend@example.net", msgid="<f-1@example.net>"))
    status = parsed(friend.message)["X-Spam-Status"]
    assert friend.folder == "INBOX", status
    assert "LOCAL_MARKER" in status and "USER_IN_WELCOMELIST" in status


def test_a_mailbox_preference_applies_to_that_mailbox_only(scanner, mailboxes):
    added = prefs.add_preference(mailboxes, "mailbox:carol@example.com", "welcomelist_from",
                                 "pal@example.net")
    try:
        body = f"About the marker: {PHRASE}"
        to_carol = scan(mailboxes, "carol@example.com",
                        message(body, sender="pal@example.net", msgid="<p-1@example.net>"))
        to_bob = scan(mailboxes, "bob@example.com",
                      message(body, sender="pal@example.net", msgid="<p-2@example.net>"))
        assert parsed(to_carol.message)["X-Spam-Flag"] is None
        assert to_bob.folder == "Spam"
    finally:
        prefs.delete_preference(mailboxes, added.id)


def test_each_mailbox_gets_its_own_spamassassin_directory(scanner, mailboxes):
    scan(mailboxes, "bob@example.com", message(msgid="<own-1@example.org>"))
    directory = spamd.user_dir(mailboxes, "bob@example.com")
    assert (directory / "user_prefs").is_file()
    assert (directory / "auto-welcomelist").exists()  # written by spamd as this user


# ---- the three reporting methods (report_safe 0/1/2); each needs spamd to reload local.cf ----

def _set_method(home: Home, server, method: str) -> None:  # type: ignore[no-untyped-def]
    set_setting(home, "spam.reporting_method", method)
    server.reload()


def test_reporting_method_attach_wraps_the_original_as_a_message_part(scanner, mailboxes):
    _set_method(mailboxes, scanner, "attach")
    mail = parsed(scan(mailboxes, "bob@example.com", message(GTUBE, subject="one")).message)
    assert mail.get_content_type() == "multipart/mixed"
    report, original = list(mail.iter_parts())
    assert report.get_content_type() == "text/plain"
    assert "Content analysis details" in report.get_content()
    assert original.get_content_type() == "message/rfc822"
    inner = original.get_content()
    assert inner["Subject"] == "one" and GTUBE in inner.get_content()
    assert mail["Subject"] == "--SPAM-- one"


def test_reporting_method_attach_plain_attaches_the_original_as_text(scanner, mailboxes):
    _set_method(mailboxes, scanner, "attach_plain")
    try:
        mail = parsed(scan(mailboxes, "bob@example.com",
                           message(GTUBE, subject="two")).message)
        assert mail.get_content_type() == "multipart/mixed"
        report, original = list(mail.iter_parts())
        assert "Content analysis details" in report.get_content()
        assert original.get_content_type() == "text/plain"
        assert original.get_param("x-spam-type") == "original"
        text = original.get_content()
        assert "Subject: two" in text and GTUBE in text
        assert mail["Subject"] == "--SPAM-- two"
    finally:
        _set_method(mailboxes, scanner, "attach")


def test_reporting_method_unchanged_keeps_the_message_and_rewrites_the_subject(
        scanner, mailboxes):
    _set_method(mailboxes, scanner, "unchanged")
    try:
        mail = parsed(scan(mailboxes, "bob@example.com",
                           message(GTUBE, subject="three")).message)
        assert mail.get_content_type() == "text/plain"
        assert not mail.is_multipart()
        assert GTUBE in mail.get_content()
        assert mail["Subject"] == "--SPAM-- three"
        assert mail["X-Spam-Flag"] == "YES"
    finally:
        _set_method(mailboxes, scanner, "attach")


def test_a_mailbox_added_later_gets_its_domain_preferences_before_its_first_scan(
        scanner, mailboxes):
    accounts.add_domain(mailboxes, "other.example")
    added = prefs.add_preference(mailboxes, "domain:other.example", "score", "GTUBE 0.5")
    try:
        accounts.add_mailbox(mailboxes, "erin@other.example", "password-of-erin-1")
        user_prefs = spamd.user_dir(mailboxes, "erin@other.example") / "user_prefs"
        assert not user_prefs.exists()  # nothing rendered it yet
        verdict = scan(mailboxes, "erin@other.example", message(GTUBE, to="erin@other.example"))
        assert "score GTUBE 0.5" in user_prefs.read_text()
        assert (verdict.folder, verdict.discard) == ("INBOX", False)
        assert parsed(verdict.message)["X-Spam-Flag"] is None  # GTUBE worth half a point here
    finally:
        prefs.delete_preference(mailboxes, added.id)

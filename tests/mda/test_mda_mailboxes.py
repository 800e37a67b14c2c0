"""The mailbox layout on disk, and Dovecot's view of it when Bayes IMAP training changes."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator

import pytest
from mda_support import (
    DOMAIN,
    IMAP,
    PASSWORD,
    RunningDovecot,
    make_node,
    place_message,
    short_tmp,
    start_dovecot,
    stop_dovecot,
)

from mailyard.home import Home
from mailyard.mailboxes import (
    STANDARD_FOLDERS,
    TRAINING_FOLDERS,
    ensure_maildir,
)
from mailyard.services.apply_settings import change_settings
from mailyard.services.privileges import mail_owner
from mailyard.store.accounts import add_mailbox, ensure_all_maildirs
from mailyard.store.settings_store import set_setting

ALICE = f"alice@{DOMAIN}"


@pytest.fixture
def home() -> Iterator[Home]:
    root = short_tmp("mda-boxes")
    yield make_node(root, users=("alice",))
    shutil.rmtree(root, ignore_errors=True)


def _subscriptions(home: Home, address: str) -> list[str]:
    return (home.maildir(address) / "subscriptions").read_text().splitlines()


def test_a_new_mailbox_has_every_folder_subscribed_private_and_owned_by_the_mail_owner(home):
    maildir = home.maildir(ALICE)
    uid, gid = mail_owner()
    assert maildir == home.mail_dir / DOMAIN / "alice" / "Maildir"
    for folder in ("", *(f".{name}" for name in STANDARD_FOLDERS + TRAINING_FOLDERS)):
        for sub in ("tmp", "new", "cur"):
            path = maildir / folder / sub
            assert path.is_dir(), path
            assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid)
        if folder:
            assert (maildir / folder / "maildirfolder").is_file()
    assert stat.S_IMODE(maildir.stat().st_mode) == 0o700
    assert stat.S_IMODE(maildir.parent.stat().st_mode) == 0o700
    assert set(_subscriptions(home, ALICE)) == {*STANDARD_FOLDERS, *TRAINING_FOLDERS}
    assert os.stat(maildir / "subscriptions").st_uid == uid


def test_ensure_maildir_is_idempotent_and_keeps_what_the_user_subscribed(home):
    maildir = home.maildir(ALICE)
    (maildir / "subscriptions").write_text("Projects\nSent\n")
    ensure_maildir(home, ALICE, training=True)
    first = _subscriptions(home, ALICE)
    ensure_maildir(home, ALICE, training=True)
    assert _subscriptions(home, ALICE) == first
    assert first[:2] == ["Projects", "Sent"]
    assert set(first) == {"Projects", *STANDARD_FOLDERS, *TRAINING_FOLDERS}


def test_training_off_unsubscribes_and_removes_only_empty_training_folders(home):
    maildir = home.maildir(ALICE)
    place_message(home, ALICE, "kept for the user", folder="Learn Ham")
    ensure_maildir(home, ALICE, training=False)
    assert not (maildir / ".Learn Spam").exists()  # empty: removed
    assert (maildir / ".Learn Ham").is_dir()  # still holds a message: kept
    assert [p.name for p in maildir.iterdir() if ".removing-" in p.name] == []
    assert not set(TRAINING_FOLDERS) & set(_subscriptions(home, ALICE))
    assert set(STANDARD_FOLDERS) <= set(_subscriptions(home, ALICE))


def test_ensure_all_maildirs_visits_every_mailbox_and_repairs_missing_folders(home):
    add_mailbox(home, f"bob@{DOMAIN}", PASSWORD)
    shutil.rmtree(home.maildir(f"bob@{DOMAIN}") / ".Trash")
    assert ensure_all_maildirs(home) == 2
    assert (home.maildir(f"bob@{DOMAIN}") / ".Trash" / "cur").is_dir()


def _names(client, command: str) -> set[str]:
    _, lines = client.list() if command == "LIST" else client.lsub()
    return {line.decode().rsplit(' "." ', 1)[1].strip('"') for line in lines}


@pytest.fixture
def running(home) -> Iterator[RunningDovecot]:
    set_setting(home, "spam.bayes_imap_training", False)
    ensure_all_maildirs(home)
    node = start_dovecot(home)
    yield node
    stop_dovecot(node)


def test_switching_training_on_and_off_shows_in_dovecot_for_existing_mailboxes(running):
    home = running.home
    client = IMAP(running.port("imap"))
    client.login(ALICE, PASSWORD)
    assert not set(TRAINING_FOLDERS) & _names(client, "LIST")

    change_settings(home, {"spam.bayes_imap_training": True})  # calls ensure_all_maildirs
    client.logout()
    client = IMAP(running.port("imap"))
    client.login(ALICE, PASSWORD)
    assert set(TRAINING_FOLDERS) <= _names(client, "LIST")
    assert set(TRAINING_FOLDERS) <= _names(client, "LSUB")
    assert client.select('"Learn Spam"')[0] == "OK"
    client.logout()

    place_message(home, ALICE, "a ham example", folder="Learn Ham")
    change_settings(home, {"spam.bayes_imap_training": False})
    client = IMAP(running.port("imap"))
    client.login(ALICE, PASSWORD)
    assert "Learn Spam" not in _names(client, "LIST")
    assert not set(TRAINING_FOLDERS) & _names(client, "LSUB")
    assert client.select('"Learn Ham"')[0] == "OK"  # mail left there is not lost
    _, found = client.search(None, "ALL")
    assert len(found[0].split()) == 1
    client.logout()

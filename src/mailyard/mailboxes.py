"""The on-disk mailbox layout shared by local delivery and Dovecot: Maildir++ with folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .home import Home

# Folders every mailbox has (Maildir++ names are "." + folder name).
STANDARD_FOLDERS: tuple[str, ...] = ("Sent", "Drafts", "Trash", "Spam")
# Folders of Bayes IMAP training (guide 6.1.3), present while that setting is on.
TRAINING_FOLDERS: tuple[str, ...] = ("Learn Spam", "Learn Ham")


def folder_dir(maildir: Path, folder: str) -> Path:
    """The directory of a folder; INBOX is the Maildir itself."""
    return maildir if folder.upper() == "INBOX" else maildir / ("." + folder)


def _make_one(path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)


def ensure_maildir(home: Home, address: str, training: bool | None = None) -> Path:
    """Create the mailbox's Maildir and folders (idempotent) and subscribe the folders."""
    if training is None:
        from .store.settings_store import load_settings

        training = bool(load_settings(home)["spam.bayes_imap_training"])
    from .services.privileges import chown_tree

    maildir = home.maildir(address)
    _make_one(maildir)
    folders = list(STANDARD_FOLDERS) + (list(TRAINING_FOLDERS) if training else [])
    for folder in folders:
        path = folder_dir(maildir, folder)
        _make_one(path)
        (path / "maildirfolder").touch(exist_ok=True)
    subscriptions = maildir / "subscriptions"
    existing = set(subscriptions.read_text().split("\n")) if subscriptions.exists() else set()
    wanted = existing | set(folders)
    wanted.discard("")
    if wanted != existing:
        tmp = maildir / "subscriptions.tmp"
        tmp.write_text("".join(f"{name}\n" for name in sorted(wanted)))
        os.replace(tmp, subscriptions)
    chown_tree(maildir.parent)
    return maildir

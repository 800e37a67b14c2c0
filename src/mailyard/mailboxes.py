"""The on-disk mailbox layout shared by local delivery and Dovecot: Maildir++ with folders.

A mailbox lives in `<mail root>/<domain>/<user>/Maildir` (Dovecot's home is
`<mail root>/<domain>/<user>`); the mail root is setting mail.root, HOME/mail while it is empty.
INBOX is the Maildir itself; a folder is a directory "." + name beside tmp/new/cur, holding
an empty `maildirfolder` file, and a subfolder joins the names with "." (Maildir++, Dovecot's
default LAYOUT with "." as separator, which mda/config.py sets explicitly). The file
`subscriptions` lists subscribed folder names one per line, in the format Dovecot 2.3 reads
and writes itself.

Every mailbox has Sent, Drafts, Trash and Spam. While Bayes IMAP training is on it also has
"Learn Spam" and "Learn Ham", subscribed so that mail clients show them; when training is
switched off they are unsubscribed, and removed if no message is left in them (a folder that
still holds mail stays, so nothing a user put there is lost).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from . import safefs
from .services.privileges import MAIL_USER, chown_path, mail_owner, running_as_root

if TYPE_CHECKING:
    from .home import Home

# Folders every mailbox has (Maildir++ names are "." + folder name).
STANDARD_FOLDERS: tuple[str, ...] = ("Sent", "Drafts", "Trash", "Spam")
# Folders of Bayes IMAP training (guide 6.1.3), present while that setting is on.
TRAINING_FOLDERS: tuple[str, ...] = ("Learn Spam", "Learn Ham")

# Mail is private to its owner; Dovecot gives the folders it creates the mode of the Maildir.
MAILDIR_MODE = 0o700


def folder_dir(maildir: Path, folder: str) -> Path:
    """The directory of a folder; INBOX is the Maildir itself."""
    return maildir if folder.upper() == "INBOX" else maildir / ("." + folder)


# Files we write into a Maildir (subscriptions, maildirfolder markers): the owner's alone.
MAILDIR_FILE_MODE = 0o600
# mail/<domain>: delivery and Dovecot (the mail owner) reach the mailboxes through it.
DOMAIN_DIR_MODE = 0o755


class _Place:
    """Where root writes a mailbox's files: relative to the mail root's parent, a directory
    root trusts, never following a link the mail owner may have planted below it (safefs)."""

    def __init__(self, mail_root: Path) -> None:
        self.base = mail_root.parent
        self.owner = mail_owner() if running_as_root() else None

    def rel(self, path: Path) -> str:
        return safefs.relative_to(self.base, path)

    def mkdirs(self, path: Path, mode: int = MAILDIR_MODE) -> None:
        safefs.mkdirs(self.base, self.rel(path), mode, self.owner)

    def write(self, path: Path, data: str) -> None:
        safefs.write_file(self.base, self.rel(path), data.encode("utf-8", "surrogateescape"),
                          MAILDIR_FILE_MODE, self.owner, MAILDIR_MODE, self.owner)


def _make_one(place: _Place, path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        place.mkdirs(path / sub)


def _read_subscriptions(maildir: Path) -> list[str]:
    try:
        text = (maildir / "subscriptions").read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    return [line for line in text.split("\n") if line]


def _write_subscriptions(place: _Place, maildir: Path, names: list[str]) -> None:
    place.write(maildir / "subscriptions", "".join(f"{name}\n" for name in names))


def _holds_mail(path: Path) -> bool:
    return any(any((path / sub).iterdir()) for sub in ("new", "cur") if (path / sub).is_dir())


def _remove_if_empty(path: Path) -> None:
    """Remove a folder that holds no message. It is first renamed away, so a message moved in
    by an IMAP client at that moment cannot land in a directory that is being deleted; if one
    is there after all, the folder is put back."""
    if not path.is_dir() or _holds_mail(path):
        return
    aside = path.with_name(f"{path.name}.removing-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except OSError:
        return
    if _holds_mail(aside):
        os.rename(aside, path)
        return
    shutil.rmtree(aside, ignore_errors=True)


def ensure_maildir(home: Home, address: str, training: bool) -> Path:
    """Create the mailbox's Maildir and folders and bring its subscriptions in line
    (idempotent; safe on a mailbox in use). `training` is setting spam.bayes_imap_training;
    a caller that loads the settings for it hands them to `home.use_settings` too, so that a
    long-running process (the panel) creates mailboxes where mail.root says now."""
    maildir = home.maildir(address)
    domain_dir = maildir.parent.parent
    place = _Place(home.mail_dir)
    # mail/<domain> is made here as well; delivery (the mail owner) adds mailboxes to it.
    place.mkdirs(domain_dir, DOMAIN_DIR_MODE)
    _make_one(place, maildir)
    wanted = list(STANDARD_FOLDERS) + (list(TRAINING_FOLDERS) if training else [])
    for folder in wanted:
        path = folder_dir(maildir, folder)
        _make_one(place, path)
        marker = path / "maildirfolder"
        if not marker.is_file():
            place.write(marker, "")
    unwanted = [] if training else list(TRAINING_FOLDERS)
    for folder in unwanted:
        _remove_if_empty(folder_dir(maildir, folder))

    existing = _read_subscriptions(maildir)
    names = [n for n in existing if n not in unwanted]
    names += [n for n in wanted if n not in names]
    if names != existing or not (maildir / "subscriptions").is_file():
        _write_subscriptions(place, maildir, names)
    return maildir


# ---- the mail root ----------------------------------------------------------------------------

# Mode of a mail root mailyard creates (like HOME/mail): Dovecot's and delivery's processes run
# as the mail owner and only need to reach the domain directories below it.
MAIL_ROOT_MODE = 0o755
# Mode of parent directories created on the way to a new mail root: traversable by everyone.
PARENT_MODE = 0o755
# `test -w` run as the mail owner takes milliseconds; generous for a slow NFS server.
ACCESS_CHECK_TIMEOUT_SECONDS = 30.0


class MailRootError(OSError):
    """The mail root cannot be used; the message says why and what would do."""


def _owner_can_write(path: Path) -> bool:
    """Whether the mail owner may create entries in `path` and reach it. As root the check is
    run as that user (`test -w -a -x`, i.e. access(2)), so ACLs, squashing NFS servers and
    every parent directory count as they will for delivery and Dovecot."""
    if not running_as_root():
        return os.access(path, os.W_OK | os.X_OK)
    uid, gid = mail_owner()
    try:
        done = subprocess.run(["test", "-w", str(path), "-a", "-x", str(path)], user=uid,
                              group=gid, extra_groups=os.getgrouplist(MAIL_USER, gid),
                              timeout=ACCESS_CHECK_TIMEOUT_SECONDS, capture_output=True)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def prepare_mail_root(root: Path) -> None:
    """Make `root` ready to hold mailboxes, or raise MailRootError saying why it cannot.

    A missing directory is created (with any missing parents, which stay the creator's and
    open to all) and given to the mail owner. An existing one is never taken over: it must
    already be a directory the mail owner can write, since it may be a mount point or a tree
    that other nodes use as well."""
    owner = f"the mail owner ({MAIL_USER})" if running_as_root() else "this node's user"
    if not root.exists():
        missing = [root, *(p for p in root.parents if not p.exists())]
        try:
            for path in reversed(missing):
                try:
                    path.mkdir(mode=MAIL_ROOT_MODE if path == root else PARENT_MODE)
                except FileExistsError:
                    continue
                os.chmod(path, MAIL_ROOT_MODE if path == root else PARENT_MODE)
                if path == root:
                    chown_path(path)
        except OSError as exc:
            raise MailRootError(f"{root} does not exist and cannot be created "
                                f"({exc.strerror or exc}): create it for {owner}, or name "
                                "another directory") from None
    if not root.is_dir():
        raise MailRootError(f"{root} exists and is not a directory: name a directory")
    if not _owner_can_write(root):
        raise MailRootError(f"{root} is not writable by {owner}: give it to that user, or "
                            "name a directory that does not exist yet, which is then created")

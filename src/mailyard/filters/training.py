"""Bayes IMAP training (guide 6.1.3): learn each mailbox's "Learn Spam"/"Learn Ham" folders.

Once a day (train_if_due) and on demand (train, behind `mailyard spam train`), for every
mailbox: the messages in its ".Learn Spam" and ".Learn Ham" Maildir++ folders, oldest first
and at most spam.bayes_imap_limit per folder per day, are taught to Bayes through spamd
(TELL, as that mailbox's user: its own database, or the global one when spam.bayes_global is
on, since the site config then points every user's bayes_path there) and then removed from
the folder. Then the folder is emptied, as the guide says ("after which the folders'
contents are purged"): messages over the day's limit are removed without being learned. A
message is removed only after spamd confirmed it; when spamd is down nothing more is removed
and the messages stay for the next run. One report line per mailbox goes to
HOME/log/spam-train/.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import safefs
from ..logs import LogDir
from ..mailboxes import folder_dir
from ..services.privileges import mail_owner, running_as_root
from ..settings.registry import value
from ..store.accounts import list_mailboxes
from ..store.settings_store import load_settings
from . import spamc
from .spamd import socket_path as spamd_socket

if TYPE_CHECKING:
    from ..home import Home

# Which Maildir++ folder teaches what.
FOLDERS: dict[str, bool] = {"Learn Spam": True, "Learn Ham": False}
# The daily run happens at the first call after this local hour: a quiet time on most
# servers, and after the day's counters were reset at midnight.
TRAINING_HOUR = 3
# Messages bigger than this are not learned (removed and counted as skipped): sa-learn skips
# messages over 256 KB by default for the same reason — the tokens of a large message are
# mostly attachment noise, and learning them costs seconds.
MAX_LEARN_BYTES = 256 * 1024
# Per-message timeout for spamd's TELL; learning is quick, but spamd may be busy scanning.
LEARN_TIMEOUT_SECONDS = 60.0


@dataclass
class MailboxReport:
    address: str
    spam_learned: int = 0
    ham_learned: int = 0
    already_known: int = 0  # spamd knew the message as such already (still removed)
    skipped_too_big: int = 0
    purged_over_limit: int = 0  # over the day's limit: removed without being learned
    error: str = ""

    def line(self, database: str) -> str:
        text = (f"mailbox={self.address} db={database} spam_learned={self.spam_learned} "
                f"ham_learned={self.ham_learned} already_known={self.already_known} "
                f"skipped_too_big={self.skipped_too_big} "
                f"purged_over_limit={self.purged_over_limit}")
        return text + (f" error={self.error}" if self.error else "")


@dataclass
class TrainingReport:
    started: float
    mailboxes: list[MailboxReport] = field(default_factory=list)
    note: str = ""

    @property
    def learned(self) -> int:
        return sum(m.spam_learned + m.ham_learned for m in self.mailboxes)

    def to_dict(self) -> dict[str, Any]:
        return {"started": self.started, "note": self.note, "learned": self.learned,
                "mailboxes": [vars(m) for m in self.mailboxes]}


# ---- state: daily counters and the last run ---------------------------------------------------

def training_dir(home: Home) -> Path:
    return home.var_dir / "spamassassin" / "training"


def _counter_file(home: Home, address: str) -> Path:
    return training_dir(home) / f"{address}.json"


def read_counters(home: Home, address: str, today: date) -> dict[str, int]:
    """How many messages of each folder this mailbox has had learned today."""
    try:
        data = json.loads(_counter_file(home, address).read_text())
    except (OSError, ValueError):
        return {name: 0 for name in FOLDERS}
    if data.get("date") != today.isoformat():
        return {name: 0 for name in FOLDERS}
    return {name: int(data.get("counts", {}).get(name, 0)) for name in FOLDERS}


def _state_owner() -> tuple[int, int] | None:
    """Root (`mailyard spam train`) writes the mail owner's state as that owner's files."""
    return mail_owner() if running_as_root() else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace a state file below HOME/var (the mail owner's directories) without following
    a link planted there (safefs)."""
    base = path.parents[2]  # HOME/var: root's; spamassassin/training below it is not
    owner = _state_owner()
    safefs.write_file(base, safefs.relative_to(base, path), json.dumps(data, sort_keys=True)
                      + "\n", mode=0o640, owner=owner, dir_mode=0o750, dir_owner=owner)


def write_counters(home: Home, address: str, today: date, counts: dict[str, int]) -> None:
    _write_json(_counter_file(home, address), {"date": today.isoformat(), "counts": counts})


def _last_run_file(home: Home) -> Path:
    return training_dir(home) / "last-run.json"


def last_run(home: Home) -> dict[str, Any] | None:
    try:
        run: dict[str, Any] = json.loads(_last_run_file(home).read_text())
        return run
    except (OSError, ValueError):
        return None


@contextmanager
def _exclusive(home: Home) -> Iterator[bool]:
    """One training run at a time (the daily one and `mailyard spam train` may meet)."""
    # in the training directory: the mail owner's, so the send service can create it too
    owner = _state_owner()
    with safefs.directory(home.var_dir, safefs.relative_to(home.var_dir, training_dir(home)),
                          0o750, owner) as dfd:
        # flock needs no write access; O_NOFOLLOW: never a file a link points root at
        fd = os.open("train.lock", os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dfd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# ---- the folders ------------------------------------------------------------------------------

def folder_messages(folder: Path) -> list[Path]:
    """The messages of a Maildir folder (new/ and cur/), oldest first."""
    found: list[tuple[float, str, Path]] = []
    for sub in ("new", "cur"):
        directory = folder / sub
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            # a link is no message: root must not read what it points at
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            found.append((entry.stat().st_mtime, entry.name, Path(entry.path)))
    found.sort()
    return [path for _, _, path in found]


class NotAMessage(OSError):
    """A folder entry that root will not read: a link, or not a file of the mail's owner."""


def read_message(path: Path) -> bytes:
    """A message file's bytes, read without following a link. As root only a regular file
    of the mail owner's is read: whatever a link or a swapped directory leads to instead
    (a root-only file) is refused, so training never hands such a file to Bayes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAMessage(f"{path} is a link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAMessage(f"{path} is not a regular file")
        if running_as_root() and st.st_uid != mail_owner()[0]:
            raise NotAMessage(f"{path} does not belong to the mail owner")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def plan(messages: list[Path], learned_today: int, limit: int) -> tuple[list[Path], list[Path]]:
    """(messages to learn now, messages over the daily limit, to be purged unlearned)."""
    room = max(0, limit - learned_today)
    return messages[:room], messages[room:]


def remove_message(maildir: Path, path: Path) -> bool:
    """Remove one message file of `maildir`, reaching its folder without following a link
    (this may run as root in a directory the mail owner controls); False if it was gone."""
    try:
        with safefs.directory(maildir, path.parent.relative_to(maildir)) as folder:
            os.unlink(path.name, dir_fd=folder)
    except FileNotFoundError:
        return False  # the user moved or deleted it meanwhile
    return True


def purge(maildir: Path, messages: list[Path]) -> int:
    """Remove messages over the day's limit, unlearned; how many were still there."""
    return sum(remove_message(maildir, path) for path in messages)


# ---- training ---------------------------------------------------------------------------------

async def train_mailbox(home: Home, settings: dict[str, Any], address: str,
                        today: date) -> MailboxReport:
    report = MailboxReport(address)
    maildir = home.maildir(address)
    limit = int(value(settings, "spam.bayes_imap_limit"))
    counts = read_counters(home, address, today)
    spamd_at = spamd_socket(home)
    try:
        for name, as_spam in FOLDERS.items():
            todo, over = plan(folder_messages(folder_dir(maildir, name)), counts[name], limit)
            for path in todo:
                try:
                    message = await asyncio.to_thread(read_message, path)
                except FileNotFoundError:
                    continue  # the user moved or deleted it meanwhile
                except NotAMessage:
                    continue  # left where it is, unread
                if len(message) > MAX_LEARN_BYTES:
                    report.skipped_too_big += 1
                else:
                    learned = await spamc.learn(spamd_at, message, as_spam, address,
                                                LEARN_TIMEOUT_SECONDS)
                    if not learned:
                        report.already_known += 1
                    elif as_spam:
                        report.spam_learned += 1
                    else:
                        report.ham_learned += 1
                remove_message(maildir, path)
                counts[name] += 1
            report.purged_over_limit += purge(maildir, over)
    except spamc.SpamdUnavailable as exc:
        report.error = f"spamd unavailable, the rest stays in the folders: {exc}"
    finally:
        write_counters(home, address, today, counts)
    return report


async def train_async(home: Home, today: date | None = None) -> TrainingReport:
    """Train every mailbox now (within today's limits); log and return the report."""
    settings = load_settings(home)
    today = today or date.today()
    report = TrainingReport(started=time.time())
    log = _open_log(home)
    try:
        if not value(settings, "spam.bayes_imap_training"):
            report.note = "Bayes IMAP training is off (spam.bayes_imap_training)"
        elif not value(settings, "spam.bayes"):
            report.note = "Bayes is off (spam.bayes): nothing to train"
        with _exclusive(home) as mine:
            if not mine:
                report.note = "another training run is in progress"
            elif not report.note:
                database = "global" if settings.get("spam.bayes_global") else "mailbox"
                for mailbox in list_mailboxes(home):
                    if not mailbox.active:
                        continue
                    one = await train_mailbox(home, settings, mailbox.address, today)
                    report.mailboxes.append(one)
                    if one.line(database) != MailboxReport(one.address).line(database):
                        log.write(one.line(database))  # only mailboxes with something done
            if mine:
                _write_json(_last_run_file(home), {"date": today.isoformat(),
                                                   "time": report.started,
                                                   "learned": report.learned,
                                                   "note": report.note})
        log.write(f"training done: learned={report.learned} "
                  f"mailboxes={len(report.mailboxes)}"
                  + (f" note={report.note}" if report.note else ""))
    finally:
        log.close()
        _give_to_mail_owner(home)
    return report


def _open_log(home: Home) -> LogDir:
    return LogDir(home.service_log_dir("spam-train"))


def _give_to_mail_owner(home: Home) -> None:
    """Run as root (the CLI), leave the log and counters writable by the send service
    (by descriptors: a link planted in these directories is not followed)."""
    owner = _state_owner()
    if owner is None:
        return
    safefs.chown_tree(home.log_dir, "spam-train", *owner)
    safefs.chown_tree(home.var_dir, safefs.relative_to(home.var_dir, training_dir(home)),
                      *owner)


def train(home: Home, today: date | None = None) -> TrainingReport:
    """`mailyard spam train`: train every mailbox now (a blocking call)."""
    return asyncio.run(train_async(home, today))


def is_due(last: dict[str, Any] | None, now: datetime) -> bool:
    """The daily run is due once a day, at the first call from TRAINING_HOUR on."""
    if now.hour < TRAINING_HOUR:
        return False
    return last is None or last.get("date") != now.date().isoformat()


async def train_if_due_async(home: Home, now: datetime | None = None
                             ) -> TrainingReport | None:
    """Run the daily training when it is due; cheap to call every minute."""
    now = now or datetime.now()
    if not is_due(last_run(home), now):
        return None
    return await train_async(home, now.date())


def train_if_due(home: Home, now: datetime | None = None) -> TrainingReport | None:
    return asyncio.run(train_if_due_async(home, now))

"""The outbound rate counters of a node: one small file, `HOME/var/limits/rates`.

Every process that sends mail out counts in the same file: each worker of the smtp and
submission services and the sendmail daemon. A file, not the services' shared memory
(`smtp.shared`), because the counts must survive a restart of any of them and be shared by
programs that are not forked from one parent; a file, not SQLite, because an update is one
read and one write of a few kilobytes under one lock, with no journal to sync.

Format: JSON, `{"v": 1, "keys": {KEY: [[start, messages, recipients], ...]}, "over": {KEY:
[when, rule, limit, count]}}`, the buckets of `ratelimit`'s sliding hour per key, and the
keys last refused (for the panel's problems list and `mailyard limits`). Buckets older than
the hour are dropped at every write, so the file holds at most the keys that sent in the last
hour. Every change is made under `fcntl.lockf` of the file itself (the kernel drops the lock
of a process that dies); the file is rewritten in place, never renamed, so every process's
open descriptor stays the file. Nothing is fsynced: after a power cut the counts of the last
seconds may be lost, which lets a sender a few more messages through, no mail is lost.
A file that cannot be parsed (cut by a crash in the middle of a write) counts as empty.

For a cluster the counts are per node (each node its own file): a sender spreading its mail
over N nodes may send N times its limit. The store would make them cluster-wide at the cost
of a round trip to PostgreSQL per message on the fast path.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import safefs
from ..services.privileges import mail_owner, running_as_root
from . import ratelimit as RL

if TYPE_CHECKING:
    from ..home import Home

LIMITS_DIR = "var/limits"
RATES_FILE = "rates"
OVER_FILE = "over"  # the keys whose mail is to be held (limits.hold_when_over)
DIR_MODE = 0o750
FILE_MODE = 0o640  # names senders: the mail owner's and its group's only
# A file larger than this is not ours (the counts of 10,000 senders take about 1 MB).
MAX_FILE_BYTES = 16 * 1024 * 1024
_VERSION = 1
# The keys of senders quiet for an hour are dropped from the file at most this often: pruning
# reads every key, which on a node with a thousand senders costs more than the update itself.
PRUNE_SECONDS = 60


def _owner() -> tuple[int, int] | None:
    return mail_owner() if running_as_root() else None


def _open(home: Home, name: str, flags: int) -> int:
    """HOME/var/limits/NAME, made (0640, the mail owner's) if missing; never through a link:
    the directory is the mail owner's, and root opens it too (the CLI, the panel)."""
    owner = _owner()
    with safefs.directory(home.root, LIMITS_DIR, create_mode=DIR_MODE, owner=owner) as dfd:
        fd = os.open(name, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                     dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):
            raise safefs.UnsafePath(f"{home.root / LIMITS_DIR / name} is not a regular file")
        if owner is not None and (st.st_uid, st.st_gid) != owner and st.st_nlink == 1:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


class RateTable:
    """The node's counters, kept open for the life of the process (one descriptor)."""

    def __init__(self, home: Home, clock: Callable[[], float] = time.time) -> None:
        self.home = home
        self._clock = clock
        self._fd = _open(home, RATES_FILE, os.O_RDWR)
        # lockf excludes other processes only; the threads of one (the sendmail daemon's
        # callers) take this first
        self._threads = threading.Lock()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RateTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the file ------------------------------------------------------------------------------
    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[dict[str, Any]]:
        with self._threads:
            fcntl.lockf(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield self._load()
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        size = os.fstat(self._fd).st_size
        raw = os.pread(self._fd, min(size, MAX_FILE_BYTES), 0) if size else b""
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            data = {}
        keys = data.get("keys") if isinstance(data.get("keys"), dict) else {}
        over = data.get("over") if isinstance(data.get("over"), dict) else {}
        pruned = data.get("pruned") if isinstance(data.get("pruned"), int | float) else 0
        return {"v": _VERSION, "keys": keys, "over": over, "pruned": pruned}

    def _store(self, data: dict[str, Any], now: float) -> None:
        """Write the table back; every PRUNE_SECONDS also drop the keys and refusals older
        than the hour (the keys written now were pruned by `ratelimit.added` already)."""
        keys, over = data["keys"], data["over"]
        if not 0 <= now - float(data["pruned"]) < PRUNE_SECONDS:
            keys = {k: kept for k, v in keys.items() if (kept := RL.live(_buckets(v), now))}
            over = {k: v for k, v in over.items()
                    if isinstance(v, list) and v and isinstance(v[0], int | float)
                    and now - float(v[0]) < RL.WINDOW_SECONDS}
            data["pruned"] = now
        raw = json.dumps({"v": _VERSION, "keys": keys, "over": over, "pruned": data["pruned"]},
                         separators=(",", ":")).encode()
        os.pwrite(self._fd, raw, 0)
        os.ftruncate(self._fd, len(raw))

    # ---- what the senders ask --------------------------------------------------------------------
    def buckets(self, sender: RL.Sender) -> tuple[list[RL.Bucket], list[RL.Bucket]]:
        """The buckets of the sender's own key and of its domain (a shared lock, no write)."""
        with self._locked(exclusive=False) as data:
            return (_buckets(data["keys"].get(sender.key)),
                    _buckets(data["keys"].get(sender.domain_key)) if sender.domain else [])

    def early(self, limits: RL.Limits, sender: RL.Sender,
              recipients_so_far: int = 0) -> RL.Verdict | None:
        """Whether one more message (and one more remote recipient) would pass a limit."""
        own, domain = self.buckets(sender)
        return RL.over_now(limits, sender, own, domain, self._clock(), recipients_so_far)

    def charge(self, limits: RL.Limits, sender: RL.Sender,
               remote_recipients: int) -> RL.Verdict | None:
        """Count one message with `remote_recipients` remote recipients for the sender and
        its domain, if it fits under every limit (decided and counted under one lock, so two
        workers can never both take the last place); else count nothing, remember the key
        as refused and return the verdict."""
        if not RL.counted(remote_recipients) or not limits.any:
            return None
        now = self._clock()
        with self._locked(exclusive=True) as data:
            keys = data["keys"]
            own = _buckets(keys.get(sender.key))
            domain = _buckets(keys.get(sender.domain_key)) if sender.domain else []
            found = RL.verdict(limits, sender, own, domain, now, messages=1,
                               recipients=remote_recipients)
            if found is None:
                keys[sender.key] = RL.added(own, now, 1, remote_recipients)
                if sender.domain:
                    keys[sender.domain_key] = RL.added(domain, now, 1, remote_recipients)
            else:
                data["over"][found.key] = [now, found.rule, found.limit, found.count]
            self._store(data, now)
            return found

    def note_refused(self, found: RL.Verdict) -> None:
        """Remember a key refused by the early check (the panel shows it for an hour)."""
        now = self._clock()
        with self._locked(exclusive=True) as data:
            data["over"][found.key] = [now, found.rule, found.limit, found.count]
            self._store(data, now)

    def report(self) -> tuple[dict[str, tuple[int, int]], dict[str, list[Any]]]:
        """(messages and recipients in the last hour per key, the keys refused in the last
        hour with [when, rule, limit, count])."""
        now = self._clock()
        with self._locked(exclusive=False) as data:
            counts = {k: RL.totals(_buckets(v), now) for k, v in data["keys"].items()}
            over = {k: v for k, v in data["over"].items()
                    if isinstance(v, list) and len(v) == 4 and isinstance(v[0], int | float)
                    and now - float(v[0]) < RL.WINDOW_SECONDS}
        return {k: c for k, c in counts.items() if c != (0, 0)}, over


def _buckets(raw: Any) -> list[RL.Bucket]:
    """The buckets of one key as stored; anything malformed is dropped (hostile file)."""
    out: list[RL.Bucket] = []
    if not isinstance(raw, list):
        return out
    for item in raw:
        if (isinstance(item, (list, tuple)) and len(item) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                        for x in item)):
            out.append((item[0], item[1], item[2]))
    return out


def on_over_limit(home: Home, key: str, found: RL.Verdict, limits: RL.Limits,
                  log: Callable[[str], None]) -> None:
    """What happens when a key is over a limit, in one place: a log line naming the rule,
    and, with limits.hold_when_over, the key added to HOME/var/limits/over (one key a line)
    for the queue to hold that sender's queued mail for review."""
    log(rate_limit_line(found))
    if not limits.hold_when_over:
        return
    fd = _open(home, OVER_FILE, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        known = os.pread(fd, MAX_FILE_BYTES, 0).decode("utf-8", "replace").splitlines()
        if key not in known:
            os.pwrite(fd, (key + "\n").encode(), os.fstat(fd).st_size)
    finally:
        os.close(fd)


def rate_limit_line(found: RL.Verdict) -> str:
    """The log line of a refusal (smtp/submission log, the sendmail daemon's log)."""
    return (f"rate-limit rule={found.rule} key={found.key} limit={found.limit} "
            f"count={found.count} resets={int(found.resets_at)}")


def held_keys(home: Home) -> list[str]:
    """The keys recorded for holding (limits.hold_when_over)."""
    fd = _open(home, OVER_FILE, os.O_RDONLY)
    try:
        return [k for k in os.pread(fd, MAX_FILE_BYTES, 0).decode("utf-8", "replace")
                .splitlines() if k]
    finally:
        os.close(fd)


def prepare(home: Home) -> None:
    """Make HOME/var/limits and its counter file for the mail owner; called as root before a
    service drops its privileges (HOME/var is root's)."""
    os.close(_open(home, RATES_FILE, os.O_RDWR))

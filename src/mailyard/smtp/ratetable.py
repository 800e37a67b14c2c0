"""The outbound rate counters of a node: one file of fixed slots, `HOME/var/limits/rates`.

Every process that sends mail out counts in the same file: each worker of the smtp and
submission services and the sendmail daemon. A file, not the services' shared memory
(`smtp.shared`), because the counts must survive a restart of any of them and be shared by
programs that are not forked from one parent; fixed slots in a mapped file, not SQLite or a
text format, because a message's update then touches two slots (its sender's, its domain's)
under one lock, whatever the number of senders, with no journal and no parsing.

Layout (little-endian): a header of HEADER_SIZE octets (MAGIC, the slot count), then SLOTS
slots of SLOT_SIZE octets, each one key: a 16-octet hash of the key (all zero: never used),
the key's text (for `mailyard limits` and the panel; cut at NAME_BYTES), the BUCKETS buckets
of `ratelimit`'s sliding hour (start, messages, recipients), and its last refusal (when, rule,
limit, count). A slot is found by open addressing (hash, then the next slots, at most
MAX_PROBE); a slot whose buckets and refusal are all older than the hour is free again; when
every slot of a probe run is live, the one quiet for longest is taken over.

Every change is made under `fcntl.lockf` of the file (the kernel drops the lock of a process
that dies) and, within a process, a thread lock (the sendmail daemon serves its callers in
threads). Nothing is fsynced: after a power cut the counts of the last seconds may be lost,
which lets a sender a few more messages through; no mail is lost. A file with another header
(damaged, or of another version) is cleared.

For a cluster the counts are per node (each node its own file): a sender spreading its mail
over N nodes may send N times its limit. The store would make them cluster-wide at the cost
of a round trip to PostgreSQL per message on the fast path.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import safefs
from ..services.privileges import mail_owner, running_as_root
from . import ratelimit as RL
from .rate_hold import hold_in_background

if TYPE_CHECKING:
    from ..home import Home

LIMITS_DIR = "var/limits"
RATES_FILE = "rates"
OVER_FILE = "over"  # the keys whose mail is to be held (limits.hold_when_over)
DIR_MODE = 0o750
FILE_MODE = 0o640  # names senders: the mail owner's and its group's only
# The `over` file lists keys, one a line; larger than this it is not ours.
MAX_FILE_BYTES = 1024 * 1024


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
        self._map: mmap.mmap | None = None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RateTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the file ------------------------------------------------------------------------------
    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            with self._threads:
                fcntl.lockf(self._fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(self._fd).st_size != FILE_SIZE:  # new (or not ours)
                        os.ftruncate(self._fd, FILE_SIZE)
                finally:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)
                self._map = mmap.mmap(self._fd, FILE_SIZE, mmap.MAP_SHARED,
                                      mmap.PROT_READ | mmap.PROT_WRITE)
        return self._map

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[mmap.mmap]:
        table = self._mapped()
        with self._threads:
            # shared for reading, but a damaged header is rewritten: always exclusive then
            fcntl.lockf(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                if os.fstat(self._fd).st_size < FILE_SIZE:
                    # cut by someone else: a mapped page past the end would kill us (SIGBUS)
                    os.ftruncate(self._fd, FILE_SIZE)
                if _HEADER.unpack_from(table, 0) != (MAGIC, SLOTS):
                    if not exclusive:
                        fcntl.lockf(self._fd, fcntl.LOCK_EX)
                    table[:] = bytes(FILE_SIZE)  # new or damaged: start from nothing
                    _HEADER.pack_into(table, 0, MAGIC, SLOTS)
                yield table
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _find(self, table: mmap.mmap, key: str, claim: bool, now: float) -> int | None:
        """The offset of `key`'s slot (claiming one for it when `claim`), or None."""
        digest = _digest(key)
        start = int.from_bytes(digest[:4], "little")
        reusable, quietest, quiet_since = None, None, float("inf")
        for i in range(MAX_PROBE):
            at = HEADER_SIZE + ((start + i) % SLOTS) * SLOT_SIZE
            found = bytes(table[at:at + 16])
            if found == digest:
                return at
            if found == _EMPTY:
                reusable = at if reusable is None else reusable
                break  # the end of this probe run: the key is not further on
            last = _last_use(table, at)
            if reusable is None and now - last >= RL.WINDOW_SECONDS:
                reusable = at
            if last < quiet_since:
                quietest, quiet_since = at, last
        if not claim:
            return None
        taken = reusable if reusable is not None else quietest
        assert taken is not None
        at = taken
        name = key.encode("utf-8", "replace")[:NAME_BYTES]
        table[at:at + SLOT_SIZE] = bytes(SLOT_SIZE)
        _NAME.pack_into(table, at, digest, len(name), name)
        return at

    # ---- what the senders ask --------------------------------------------------------------------
    def buckets(self, sender: RL.Sender) -> tuple[list[RL.Bucket], list[RL.Bucket]]:
        """The buckets of the sender's own key and of its domain (a shared lock, no write)."""
        now = self._clock()
        with self._locked(exclusive=False) as table:
            own = self._find(table, sender.key, False, now)
            domain = self._find(table, sender.domain_key, False, now) if sender.domain else None
            return (_read_buckets(table, own) if own is not None else [],
                    _read_buckets(table, domain) if domain is not None else [])

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
        with self._locked(exclusive=True) as table:
            own_at = self._find(table, sender.key, True, now)
            assert own_at is not None
            domain_at = self._find(table, sender.domain_key, True, now) if sender.domain \
                else None
            own = _read_buckets(table, own_at)
            domain = _read_buckets(table, domain_at) if domain_at is not None else []
            found = RL.verdict(limits, sender, own, domain, now, messages=1,
                               recipients=remote_recipients)
            if found is None:
                _write_buckets(table, own_at, RL.added(own, now, 1, remote_recipients))
                if domain_at is not None:
                    _write_buckets(table, domain_at,
                                   RL.added(domain, now, 1, remote_recipients))
            else:
                at = own_at if found.key == sender.key else domain_at
                assert at is not None
                _write_refusal(table, at, now, found)
            return found

    def note_refused(self, found: RL.Verdict) -> None:
        """Remember a key refused by the early check (the panel shows it for an hour)."""
        now = self._clock()
        with self._locked(exclusive=True) as table:
            at = self._find(table, found.key, True, now)
            assert at is not None
            _write_refusal(table, at, now, found)

    def report(self) -> tuple[dict[str, tuple[int, int]], dict[str, list[Any]]]:
        """(messages and recipients in the last hour per key, the keys refused in the last
        hour with [when, rule, limit, count])."""
        now = self._clock()
        counts: dict[str, tuple[int, int]] = {}
        over: dict[str, list[Any]] = {}
        with self._locked(exclusive=False) as table:
            for slot in range(SLOTS):
                at = HEADER_SIZE + slot * SLOT_SIZE
                if table[at:at + 16] == _EMPTY:
                    continue
                _hash, length, raw = _NAME.unpack_from(table, at)
                key = raw[:min(length, NAME_BYTES)].decode("utf-8", "replace")
                total = RL.totals(_read_buckets(table, at), now)
                if total != (0, 0):
                    counts[key] = total
                when, rule, limit, count = _OVER.unpack_from(table, at + _OVER_AT)
                if rule in _RULE_NAMES and 0 <= now - when < RL.WINDOW_SECONDS:
                    over[key] = [when, _RULE_NAMES[rule], limit, count]
        return counts, over


# ---- the slots ----------------------------------------------------------------------------------

MAGIC = b"MYRATES1"
# Senders (and domains) counted at once: 8192 slots of 512 octets are 4 MiB. A node with more
# senders in one hour than that loses the counts of the quietest first.
SLOTS = 8192
SLOT_SIZE = 512
HEADER_SIZE = 64
FILE_SIZE = HEADER_SIZE + SLOTS * SLOT_SIZE
MAX_PROBE = 64
NAME_BYTES = 238  # a key's text kept for display; longer ones are cut (the hash is exact)
_HEADER = struct.Struct("<8sI")
_NAME = struct.Struct(f"<16sH{NAME_BYTES}s")
_BUCKET = struct.Struct("<qII")  # start, messages, recipients
_BUCKETS_AT = _NAME.size
_OVER = struct.Struct("<dBII")  # when, rule, limit, count
_OVER_AT = _BUCKETS_AT + RL.BUCKETS * _BUCKET.size
_EMPTY = bytes(16)
_RULES = {RL.MESSAGES: 1, RL.RECIPIENTS: 2, RL.DOMAIN: 3}
_RULE_NAMES = {v: k for k, v in _RULES.items()}
_UINT32 = 2**32 - 1
assert _OVER_AT + _OVER.size <= SLOT_SIZE


def _digest(key: str) -> bytes:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).digest()
    return digest if digest != _EMPTY else b"\1" * 16


def _read_buckets(table: mmap.mmap, at: int) -> list[RL.Bucket]:
    out = []
    for i in range(RL.BUCKETS):
        start, messages, recipients = _BUCKET.unpack_from(table, at + _BUCKETS_AT
                                                          + i * _BUCKET.size)
        if start > 0:
            out.append((start, messages, recipients))
    return out


def _write_buckets(table: mmap.mmap, at: int, buckets: list[RL.Bucket]) -> None:
    kept = buckets[-RL.BUCKETS:]
    for i in range(RL.BUCKETS):
        start, messages, recipients = kept[i] if i < len(kept) else (0, 0, 0)
        _BUCKET.pack_into(table, at + _BUCKETS_AT + i * _BUCKET.size, start,
                          min(messages, _UINT32), min(recipients, _UINT32))


def _write_refusal(table: mmap.mmap, at: int, now: float, found: RL.Verdict) -> None:
    _OVER.pack_into(table, at + _OVER_AT, now, _RULES[found.rule], min(found.limit, _UINT32),
                    min(found.count, _UINT32))


def _last_use(table: mmap.mmap, at: int) -> float:
    """When the slot was last counted in or refused (0: never)."""
    newest = max((b[0] for b in _read_buckets(table, at)), default=0)
    refused = float(_OVER.unpack_from(table, at + _OVER_AT)[0])
    return max(float(newest + RL.BUCKET_SECONDS) if newest else 0.0, refused)


def on_over_limit(home: Home, key: str, found: RL.Verdict, limits: RL.Limits,
                  log: Callable[[str], None]) -> None:
    """What happens when a key is over a limit, in one place: a log line naming the rule,
    and, with limits.hold_when_over, the key added to HOME/var/limits/over (one key a line)
    for the queue to hold that sender's queued mail for review: the first time a key is
    recorded, its queued mail is held (smtp/rate_hold.py)."""
    log(rate_limit_line(found))
    if not limits.hold_when_over:
        return
    fd = _open(home, OVER_FILE, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        known = os.pread(fd, MAX_FILE_BYTES, 0).decode("utf-8", "replace").splitlines()
        new = key not in known
        if new:
            os.pwrite(fd, (key + "\n").encode(), os.fstat(fd).st_size)
    finally:
        os.close(fd)
    if new:
        hold_in_background(home, key, log)


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

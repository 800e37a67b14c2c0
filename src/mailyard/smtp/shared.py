"""The state the SMTP worker processes of one service share: one table in shared memory.

Every worker of a service counts in the same table, so what the guide promises holds for the
service as a whole, whatever worker a client reaches:

- the connection count ("Inbound Connections (max)" is the cap of the service, not of a
  worker), and the count per client address (the per-client cap of the safety issue);
- the AUTH failure throttle per client address (a guesser cannot spread its attempts over
  the workers to dodge the delay);
- rate counters by name, in fixed windows (reserved for the outbound limits of the operations
  issue: `add_to_rate`).

The table is a memfd (`os.memfd_create`) made by the service's parent before it forks the
workers, mapped MAP_SHARED by all of them. A POSIX record lock (`fcntl.lockf`) on the same
memfd guards every change: the kernel drops it when its holder dies, so a worker killed in the
middle of a change (SIGKILL) never leaves the others waiting. Counts are kept per worker (one
column each), so that when a worker dies its parent clears its column (`forget_worker`) and
the connections it held stop counting; a sum over the columns is the service's count.

Layout (little-endian, fixed size, no pointers):

    header   MAX_WORKERS x int64      connections open per worker
    clients  CLIENT_SLOTS x 64 octets key (16: the address as IPv6, IPv4 mapped), AUTH
                                      failures (int32), spare (int32), time of the last
                                      failure (float64, CLOCK_MONOTONIC, the same clock in
                                      every process), connections per worker (uint16 each)
    rates    RATE_SLOTS x 48 octets   key (32: the first octets of a SHA-256 of the name),
                                      window start (float64), count (int64)

A client slot is found by open addressing (hash of the key, then the next slots, at most
MAX_PROBE of them). A slot whose client has no connection open and no failure remembered is
free again. When every slot of a probe run is taken (an attack from very many addresses),
the client is not counted per address: the service-wide cap still holds, and an AUTH failure
from such a client waits the longest delay.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import ipaddress
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .policy import AUTH_FAILURE_DELAY, AUTH_FAILURE_DELAY_MAX, AUTH_FAILURE_MEMORY

# Worker processes per service at most (the `smtp.workers` bound): one column each per slot.
MAX_WORKERS = 16
# Client addresses tracked at once. The old in-process throttle kept 10,000 addresses; 8192
# slots of 64 octets are 512 KiB of shared memory.
CLIENT_SLOTS = 8192
MAX_PROBE = 32
RATE_SLOTS = 1024

_HEADER = struct.Struct(f"<{MAX_WORKERS}q")
_CLIENT = struct.Struct(f"<16siid{MAX_WORKERS}H")
_CLIENT_SIZE = 64
_RATE = struct.Struct("<32sdq")
_RATE_SIZE = 48
_CLIENTS_AT = _HEADER.size
_RATES_AT = _CLIENTS_AT + CLIENT_SLOTS * _CLIENT_SIZE
TABLE_SIZE = _RATES_AT + RATE_SLOTS * _RATE_SIZE
_EMPTY_KEY = bytes(16)
_UINT16_MAX = 65535

assert _CLIENT.size <= _CLIENT_SIZE and _RATE.size <= _RATE_SIZE


@functools.lru_cache(maxsize=4096)  # twice per connection; clients come back
def client_key(ip: str) -> bytes:
    """16 octets naming a client address (IPv4 as IPv4-mapped IPv6); unparsable text is
    hashed, so it still gets a slot of its own."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return hashlib.sha256(ip.encode("utf-8", "replace")).digest()[:16]
    if isinstance(addr, ipaddress.IPv4Address):
        addr = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed)
    return addr.packed if addr.packed != _EMPTY_KEY else b"\0" * 15 + b"\1"


class SharedState:
    """The table (see the module's docstring); `worker` is this process's column."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._fd = os.memfd_create("mailyard-smtp-shared", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, TABLE_SIZE)
        self._map = mmap.mmap(self._fd, TABLE_SIZE, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self._clock = clock
        self.worker = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    # ---- client slots --------------------------------------------------------------------------
    def _read(self, slot: int) -> tuple[bytes, int, float, list[int]]:
        key, failures, _spare, last, *conns = _CLIENT.unpack_from(
            self._map, _CLIENTS_AT + slot * _CLIENT_SIZE)
        return key, failures, last, conns

    def _write(self, slot: int, key: bytes, failures: int, last: float, conns: list[int]) -> None:
        _CLIENT.pack_into(self._map, _CLIENTS_AT + slot * _CLIENT_SIZE, key, failures, 0, last,
                          *conns)

    def _free(self, failures: int, last: float, conns: list[int], now: float) -> bool:
        return not any(conns) and (failures == 0 or now - last > AUTH_FAILURE_MEMORY)

    def _slot(self, key: bytes, claim: bool) -> int | None:
        """The slot of `key` (claiming a free one for it when `claim`), or None."""
        now = self._clock()
        start = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little")
        reusable = None
        for i in range(MAX_PROBE):
            slot = (start + i) % CLIENT_SLOTS
            found, failures, last, conns = self._read(slot)
            if found == key:
                return slot
            if found == _EMPTY_KEY:
                reusable = slot if reusable is None else reusable
                break  # the end of this probe run: the key is not further on
            if reusable is None and self._free(failures, last, conns, now):
                reusable = slot
        if not claim or reusable is None:
            return None
        self._write(reusable, key, 0, 0.0, [0] * MAX_WORKERS)
        return reusable

    # ---- connections ---------------------------------------------------------------------------
    def connection_opened(self, ip: str) -> tuple[int, int]:
        """Count a new connection; (connections of the service, of this client), both
        including this one. The per-client count is 0 when the table had no room for it."""
        with self._locked():
            totals = list(_HEADER.unpack_from(self._map, 0))
            totals[self.worker] += 1
            _HEADER.pack_into(self._map, 0, *totals)
            slot = self._slot(client_key(ip), claim=True)
            mine = 0
            if slot is not None:
                key, failures, last, conns = self._read(slot)
                conns[self.worker] = min(conns[self.worker] + 1, _UINT16_MAX)
                self._write(slot, key, failures, last, conns)
                mine = sum(conns)
            return sum(totals), mine

    def connection_closed(self, ip: str) -> None:
        with self._locked():
            totals = list(_HEADER.unpack_from(self._map, 0))
            totals[self.worker] = max(0, totals[self.worker] - 1)
            _HEADER.pack_into(self._map, 0, *totals)
            slot = self._slot(client_key(ip), claim=False)
            if slot is not None:
                key, failures, last, conns = self._read(slot)
                conns[self.worker] = max(0, conns[self.worker] - 1)
                self._write(slot, key, failures, last, conns)

    def connections(self) -> int:
        with self._locked():
            return sum(_HEADER.unpack_from(self._map, 0))

    def client_connections(self, ip: str) -> int:
        with self._locked():
            slot = self._slot(client_key(ip), claim=False)
            return 0 if slot is None else sum(self._read(slot)[3])

    def forget_worker(self, worker: int) -> None:
        """A worker has died: what it counted counts no more (called by the parent)."""
        with self._locked():
            totals = list(_HEADER.unpack_from(self._map, 0))
            totals[worker] = 0
            _HEADER.pack_into(self._map, 0, *totals)
            for slot in range(CLIENT_SLOTS):
                key, failures, last, conns = self._read(slot)
                if key != _EMPTY_KEY and conns[worker]:
                    conns[worker] = 0
                    self._write(slot, key, failures, last, conns)

    # ---- AUTH failures -------------------------------------------------------------------------
    def failures(self, ip: str) -> int:
        with self._locked():
            slot = self._slot(client_key(ip), claim=False)
            if slot is None:
                return 0
            _key, failures, last, _conns = self._read(slot)
            return failures if self._clock() - last <= AUTH_FAILURE_MEMORY else 0

    def record_failure(self, ip: str) -> float:
        """Count a failed AUTH; the seconds to wait before answering it (doubling with each
        failure from the address, as policy.AuthThrottle does within one process)."""
        with self._locked():
            slot = self._slot(client_key(ip), claim=True)
            if slot is None:
                return AUTH_FAILURE_DELAY_MAX
            key, failures, last, conns = self._read(slot)
            now = self._clock()
            count = (failures if now - last <= AUTH_FAILURE_MEMORY else 0) + 1
            self._write(slot, key, count, now, conns)
        return float(min(AUTH_FAILURE_DELAY * 2 ** (min(count, 64) - 1), AUTH_FAILURE_DELAY_MAX))

    def record_success(self, ip: str) -> None:
        with self._locked():
            slot = self._slot(client_key(ip), claim=False)
            if slot is not None:
                key, _failures, _last, conns = self._read(slot)
                self._write(slot, key, 0, 0.0, conns)

    # ---- rate counters (for the outbound limits to come) ---------------------------------------
    def add_to_rate(self, name: str, window: float, amount: int = 1) -> int:
        """Add `amount` to the counter `name` in its current window of `window` seconds; the
        count in that window after adding. When every slot is taken by a live window, the
        oldest window is dropped."""
        key = hashlib.sha256(name.encode()).digest()
        now = self._clock()
        start = int.from_bytes(key[:4], "little")
        with self._locked():
            victim, oldest = start % RATE_SLOTS, float("inf")
            for i in range(MAX_PROBE):
                slot = (start + i) % RATE_SLOTS
                at = _RATES_AT + slot * _RATE_SIZE
                found, since, count = _RATE.unpack_from(self._map, at)
                if found == key:
                    if now - since >= window:
                        since, count = now, 0
                    count += amount
                    _RATE.pack_into(self._map, at, key, since, count)
                    return int(count)
                if found == bytes(32):
                    if oldest >= 0:
                        victim = slot
                    break  # the end of this probe run: the key is not further on
                if oldest >= 0 and now - since >= window:
                    victim, oldest = slot, -1.0  # an ended window: free to take
                elif since < oldest:
                    victim, oldest = slot, since
            _RATE.pack_into(self._map, _RATES_AT + victim * _RATE_SIZE, key, now, amount)
            return amount

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

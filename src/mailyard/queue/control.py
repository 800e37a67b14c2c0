"""Who may change the queue: the send service's lock, and requests handed to the service.

While `send` runs it alone changes queue files (it holds lock/sendmutex). Administration that
changes the queue (delete, purge, process now, hold, release, retry, bounce) therefore either
leaves a request file in lock/ and wakes the service, or, when no service holds the lock,
takes the lock and works directly.

A request's file name says what to do (`req.ACTION.ARG.PID.NANOSECONDS`); the actions on a
selection of messages (BATCH_ACTIONS) have ARG `batch` and carry their queue ids and the
hold's reason in the file, as JSON.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import safefs
from ..services.privileges import chown_path, mail_owner, running_as_root
from .layout import Queue

MUTEX = "lock/sendmutex"
REQUEST_PREFIX = "req."
ACTIONS = ("flush", "delete", "purge", "hold", "release", "retry", "bounce")
# Actions that carry a selection of messages in the request file (see put_batch).
BATCH_ACTIONS = ("hold", "release", "retry", "bounce", "delete")
BATCH_ARG = "batch"
# A batch request file larger than this is ignored (10,000 ids take about 100 kB).
MAX_BATCH_BYTES = 4 * 1024 * 1024


class QueueLock:
    """An exclusive flock on lock/sendmutex, held for the life of the object (or `release`)."""

    def __init__(self, queue: Queue) -> None:
        path = queue.root / MUTEX
        # lock/ is the mail owner's and root takes this lock too: opened through a
        # descriptor of the directory, never through a link planted there (safefs)
        lock_dir = queue.state_dir_fd(os.path.dirname(MUTEX))
        try:
            self._fd: int | None = os.open(
                os.path.basename(MUTEX), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o640, dir_fd=lock_dir)
        finally:
            os.close(lock_dir)
        chown_path(path)

    def try_acquire(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> QueueLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def service_running(queue: Queue) -> bool:
    lock = QueueLock(queue)
    try:
        return not lock.try_acquire()
    finally:
        lock.release()


@dataclass(frozen=True)
class Request:
    path: Path
    action: str
    arg: str


def put_request(queue: Queue, action: str, arg: str = "-", body: bytes = b"") -> Path:
    """Leave a request for the running service and wake it; returns the request's file."""
    if action not in ACTIONS:
        raise ValueError(f"unknown queue request {action!r}; known: {', '.join(ACTIONS)}")
    name = f"{REQUEST_PREFIX}{action}.{arg}.{os.getpid()}.{time.time_ns()}"
    path = queue.root / "lock" / name
    # written through a descriptor of lock/ (the mail owner's), never through a planted link
    safefs.write_file(queue.root.parent, f"{queue.root.name}/lock/{name}", body, mode=0o640,
                      owner=mail_owner() if running_as_root() else None, dir_mode=None)
    queue.trigger()
    return path


def put_batch(queue: Queue, action: str, ids: list[str], reason: str = "") -> Path:
    """Leave a request to apply `action` to the messages `ids` (their order is kept)."""
    if action not in BATCH_ACTIONS:
        raise ValueError(f"unknown batch request {action!r}; known: {', '.join(BATCH_ACTIONS)}")
    body = json.dumps({"ids": [str(i) for i in ids], "reason": reason}).encode()
    return put_request(queue, action, BATCH_ARG, body)


def read_batch(request: Request) -> tuple[list[str], str]:
    """The queue ids and reason of a batch request; ([], "") when the file is unusable."""
    try:
        with open(request.path, "rb") as f:
            data = f.read(MAX_BATCH_BYTES + 1)
        raw = json.loads(data) if len(data) <= MAX_BATCH_BYTES else {}
        ids = [str(i) for i in raw.get("ids", []) if str(i).isdigit()]
        return ids, str(raw.get("reason", ""))
    except (OSError, ValueError, AttributeError, TypeError):
        return [], ""


def take_requests(queue: Queue) -> list[Request]:
    """The waiting requests, oldest first (the service removes each once done)."""
    out = []
    try:
        names = os.listdir(queue.root / "lock")
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith(REQUEST_PREFIX):
            continue
        parts = name[len(REQUEST_PREFIX):].split(".")
        if len(parts) < 4 or parts[0] not in ACTIONS:
            continue
        out.append((int(parts[3]) if parts[3].isdigit() else 0,
                    Request(queue.root / "lock" / name, parts[0], parts[1])))
    return [r for _, r in sorted(out, key=lambda x: x[0])]


def wait_for_request(path: Path, timeout: float) -> bool:
    """True once the service has removed the request file (done), False after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not path.exists():
            return True
        time.sleep(0.05)
    return not path.exists()

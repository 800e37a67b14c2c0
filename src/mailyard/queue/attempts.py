"""What the send service knows about the deferred deliveries of a message, kept for the
administration: per recipient the number of attempts, the last reply and the next retry.

`queue/attempts/N` is a JSON object written by the send service after each deferral (never at
SMTP time): `{"ADDRESS": {"attempts": 2, "last_reply": "...", "last_time": T,
"next_retry": T}, ...}`. It is a report, not a state the queue depends on: it is replaced
atomically (a temporary file renamed over it) but not fsynced, so a crash can at worst lose
the latest counts; the send service reads it back when it starts, so counts go on across
restarts. Failed recipients keep their final reply in bounce/N (queue/state.py).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .layout import Queue

ATTEMPTS_DIR = "attempts"
# The last reply kept per recipient: a remote server's multi-line reply can be long.
MAX_REPLY_LENGTH = 2000
# An attempts file larger than this is not read (one message has at most 10,000 recipients).
MAX_FILE_BYTES = 8 * 1024 * 1024


def read(queue: Queue, qid: str) -> dict[str, dict[str, Any]]:
    """The records of message `qid` by recipient address ({} when there are none)."""
    try:
        with open(queue.file(ATTEMPTS_DIR, qid), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    if len(data) > MAX_FILE_BYTES:
        return {}
    try:
        raw = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, dict)}


def note(records: dict[str, dict[str, Any]], address: str, reply: str, when: float,
         next_retry: float | None) -> None:
    """Count one more attempt of `address` in `records` (in memory), with its reply."""
    entry = records.setdefault(address, {"attempts": 0})
    entry["attempts"] = int(entry.get("attempts", 0)) + 1
    entry["last_reply"] = reply[:MAX_REPLY_LENGTH]
    entry["last_time"] = when
    entry["next_retry"] = next_retry


def write(queue: Queue, qid: str, records: dict[str, dict[str, Any]]) -> None:
    """Replace attempts/N with `records` (atomic rename; not fsynced, see the module)."""
    path = queue.file(ATTEMPTS_DIR, qid)
    tmp = f"{path}.{os.getpid()}.tmp"  # not a queue id: ids() ignores it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o640)
    try:
        try:
            view = memoryview(json.dumps(records, sort_keys=True).encode())
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:  # a full disk: the old record stays, the partial one goes
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

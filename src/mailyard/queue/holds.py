"""Holds: messages the administrator (or a rate limit) keeps from being delivered.

A hold is one small file, `queue/hold/N`, holding a JSON object with the reason and the time
it was put. It is written the way the queue commits everything: a temporary file, fsynced,
renamed into place, then the directory fsynced (`safefs.write_file(sync=True)`), so a hold
that was reported as made survives a crash or a restart of the send service. A release
removes the file and fsyncs the directory. Nothing on the way to an SMTP `250` reads or
writes these files; only the send service (before it starts a delivery) and the
administration do.

While the send service runs, only it changes hold files (queue/admin.py hands it requests);
with no service running the administration changes them directly under the service's lock.
Other parts of the node that hold mail (say, for a rate limit) call
`queue.admin.act(home, "hold", ids, reason=...)` rather than these functions, so that a
running send service learns of the hold before its next delivery.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from .. import safefs
from ..durable import fsync_dir
from ..home import Home
from ..services.privileges import mail_owner, running_as_root
from .layout import Queue

HOLD_DIR = "hold"
# The reason written when the administrator gives none; the send log's `hold msg N: REASON`
# uses the same word (logtools/parser.py).
DEFAULT_REASON = "administrator"
# A reason is one short line of text: the send log carries it after `hold msg N: `.
MAX_REASON_LENGTH = 200


@dataclass(frozen=True)
class Hold:
    qid: str
    reason: str
    time: float


def _queue(where: Home | Queue) -> Queue:
    return where if isinstance(where, Queue) else Queue(where.queue_dir)


def clean_reason(reason: str | None) -> str:
    """The reason as one printable line (no control characters), at most MAX_REASON_LENGTH."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in (reason or "")).split())
    return text[:MAX_REASON_LENGTH] or DEFAULT_REASON


def hold(where: Home | Queue, qid: str, reason: str | None = None) -> bool:
    """Hold message `qid` (durably); False when it was already held (the reason is kept)."""
    q = _queue(where)
    if is_held(q, qid):
        return False
    body = json.dumps({"reason": clean_reason(reason), "time": time.time()}).encode() + b"\n"
    safefs.write_file(q.root.parent, f"{q.root.name}/{HOLD_DIR}/{qid}", body, mode=0o640,
                      owner=mail_owner() if running_as_root() else None, dir_mode=None,
                      sync=True)
    return True


def release(where: Home | Queue, qid: str) -> bool:
    """Release message `qid` (durably); False when it was not held."""
    q = _queue(where)
    try:
        os.unlink(q.file(HOLD_DIR, qid))
    except FileNotFoundError:
        return False
    fsync_dir(q.root / HOLD_DIR)
    return True


def is_held(where: Home | Queue, qid: str) -> bool:
    return os.path.exists(_queue(where).file(HOLD_DIR, qid))


def held_ids(where: Home | Queue) -> set[str]:
    """Every held queue id (one directory listing)."""
    return set(_queue(where).ids(HOLD_DIR))


def get(where: Home | Queue, qid: str) -> Hold | None:
    """The hold of `qid` with its reason and time, or None when it is not held."""
    try:
        with open(_queue(where).file(HOLD_DIR, qid), "rb") as f:
            data = f.read(4096)
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(data)
        return Hold(qid, clean_reason(str(raw.get("reason", ""))), float(raw.get("time", 0)))
    except (ValueError, TypeError, AttributeError):
        return Hold(qid, DEFAULT_REASON, 0.0)  # held all the same: the file is what counts


def reason(where: Home | Queue, qid: str) -> str | None:
    """Why `qid` is held, or None when it is not."""
    found = get(where, qid)
    return found.reason if found else None

"""The send log: qmail-send's lines, word for word, so qmail's log tools and ours read it.

Every line is built by a plain function here; `SendLog` only stamps and writes them.

    new msg N
    info msg N: bytes B from <SENDER> qp P uid U
    starting delivery D: msg N to local|remote RECIPIENT
    delivery D: success|deferral|failure: REPORT
    status: local L/LMAX remote R/RMAX
    bounce msg N qp P
    end msg N
    triple bounce: discarding bounce/N
    double bounce: discarding bounce/N
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from ..logs import LogDir, logsafe  # logsafe: with the log primitives, shared with smtp


def encode_report(text: str) -> str:
    """A delivery report as qmail logs it: each line ends in `/`, then logsafe()."""
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return logsafe("".join(line + "/" for line in lines))


def local_log_name(address: str) -> str:
    """How qmail-send names a local recipient of a virtual domain: `domain-user@domain`."""
    local, at, domain = address.rpartition("@")
    return f"{domain}-{local}@{domain}" if at else address


def new_msg(qid: str) -> str:
    return f"new msg {qid}"


def info_msg(qid: str, size: int, sender: str, qp: int, uid: int) -> str:
    return f"info msg {qid}: bytes {size} from <{logsafe(sender)}> qp {qp} uid {uid}"


def starting_delivery(delivery: int, qid: str, channel: str, recipient: str) -> str:
    shown = local_log_name(recipient) if channel == "local" else recipient
    return f"starting delivery {delivery}: msg {qid} to {channel} {logsafe(shown)}"


def delivery_result(delivery: int, kind: str, report: str) -> str:
    return f"delivery {delivery}: {kind}: {encode_report(report)}"


def status(local: int, local_max: int, remote: int, remote_max: int) -> str:
    return f"status: local {local}/{local_max} remote {remote}/{remote_max}"


def bounce_msg(qid: str, qp: int) -> str:
    return f"bounce msg {qid} qp {qp}"


def end_msg(qid: str) -> str:
    return f"end msg {qid}"


def triple_bounce(qid: str) -> str:
    return f"triple bounce: discarding bounce/{qid}"


def double_bounce_discarded(qid: str) -> str:
    return f"double bounce: discarding bounce/{qid}"


def warning(text: str) -> str:
    return f"warning: {text}"


def alert(text: str) -> str:
    return f"alert: {text}"


class SendLog:
    """The send service's log directory (HOME/log/send).

    Lines written on the event loop are stamped at once and kept until the loop's turn ends,
    then written together with one system call (a delivery logs seven lines: one write and
    one fstat each cost more than making them). The send log is not what makes mail durable
    (the queue is), so the lines of the last turn may be lost to a crash, never to a clean
    stop: `close` writes what is kept. Lines from other threads are written at once, after
    what is kept, so they stay in order."""

    def __init__(self, path: Path) -> None:
        self._dir = LogDir(path)
        self._lock = threading.Lock()
        self._kept: list[bytes] = []
        self._flush_due = False

    def write(self, line: str) -> None:
        data = self._dir.encode(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another thread: no loop turn to wait for
            loop = None
        with self._lock:
            self._kept.append(data)
            if loop is not None:
                if not self._flush_due:
                    self._flush_due = True
                    loop.call_soon(self.flush)
                return
        self.flush()

    def flush(self) -> None:
        """Write the lines kept so far."""
        with self._lock:
            kept, self._kept = self._kept, []
            self._flush_due = False
            if kept:
                self._dir.write_encoded(b"".join(kept))

    def close(self) -> None:
        self.flush()
        self._dir.close()

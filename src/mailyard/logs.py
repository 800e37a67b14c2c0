"""Multilog-style log directories: one line per event, tai64n stamps, size-based rotation.

A log directory holds `current` and rotated files named `@<tai64n>.s`, exactly as daemontools'
multilog leaves them, so qmail's tools and ours read either.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from . import safefs

# Rotate `current` past this size and keep this many old files: multilog's defaults (s99999,
# n10) are small for a busy server, so we keep 10 files of 16 MB, as many qmail sites set.
MAX_FILE_BYTES = 16 * 1024 * 1024
KEEP_FILES = 10
# The one tai64n codec of the project (the log tools import it too). A TAI64 label is
# 2**62 + TAI seconds; TAI ran 10 s ahead of UTC in 1970 and daemontools (tai64nlocal,
# multilog) treats that as a fixed offset, so unix time = label - (2**62 + 10). Leap seconds
# are ignored, as tai64nlocal ignores them.
TAI64_UNIX_OFFSET = (1 << 62) + 10


def tai64n_label(t: float) -> str:
    """The 24 hex digits of unix time `t` as TAI64N: seconds, then nanoseconds."""
    sec = int(t // 1)
    nano = int(round((t - sec) * 1e9))
    if nano >= 1_000_000_000:
        sec, nano = sec + 1, nano - 1_000_000_000
    return f"{sec + TAI64_UNIX_OFFSET:016x}{nano:08x}"


def tai64n(now: float | None = None) -> str:
    """`@` + 24 hex digits: TAI64 seconds and nanoseconds (as multilog's `t` option writes)."""
    return "@" + tai64n_label(time.time() if now is None else now)


def logsafe(text: str) -> str:
    """qmail-send's logsafe(): every byte outside ! to ~, and `%`, becomes `_`.

    Every log of the node writes what a client chose (addresses, names) through it, so that
    a space, a control character or a quoted local part cannot forge a field or a line."""
    # Most addresses and reports need no change: ASCII, printable (32 to 126), no space, no %.
    if text.isascii():
        if text.isprintable() and " " not in text and "%" not in text:
            return text
        return text.translate(_LOGSAFE_ASCII)  # a space, say: one pass in C
    return "".join(chr(b) if 33 <= b <= 126 and b != 0x25 else "_"
                   for b in text.encode("utf-8", "surrogateescape"))


# logsafe's rule for ASCII text: every character outside ! to ~, and %, becomes _.
_LOGSAFE_ASCII = {code: "_" for code in [*range(0, 33), 0x25, 0x7F]}


def parse_tai64n(stamp: str) -> float:
    """Unix time of a tai64n stamp, with or without its leading `@`."""
    text = stamp[1:] if stamp.startswith("@") else stamp
    return int(text[:16], 16) - TAI64_UNIX_OFFSET + int(text[16:24], 16) / 1e9


# Logs say who wrote to whom and from where: the mail owner's group and root read them, nobody
# else (issue 16, item 4).
LOG_FILE_MODE = 0o640


def _visible(line: str) -> str:
    """`line` with its control characters (a newline, say) shown as `?`."""
    return "".join(ch if ch >= " " or ch == "\t" else "?" for ch in line)


class LogDir:
    """An append-only multilog directory written by one process (thread-safe within it).

    The directory may belong to the mail owner while root opens it (a service before it
    drops root, `mailyard spam train`): every file operation goes through a descriptor of
    the directory found without following a link (safefs), so a link planted in it is never
    written through."""

    def __init__(self, path: Path, max_bytes: int = MAX_FILE_BYTES, keep: int = KEEP_FILES,
                 fsync: bool = False) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self._lock = threading.Lock()
        # The parent is trusted (root's HOME/log); the log directory itself is opened by name.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dir_fd = safefs.open_dir(self.path.parent, self.path.name, create_mode=0o750)
        self._fd = self._open()

    def _open(self) -> int:
        return os.open("current", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                       | os.O_CLOEXEC, LOG_FILE_MODE, dir_fd=self._dir_fd)

    def write(self, line: str) -> None:
        """Append one line; newlines and control characters inside it are made visible."""
        # Almost every line is printable already: skip the per-character pass for those.
        clean = line if line.isprintable() else _visible(line)
        data = f"{tai64n()} {clean}\n".encode("utf-8", "replace")
        with self._lock:
            os.write(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
            if os.fstat(self._fd).st_size >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        dfd = self._dir_fd
        os.rename("current", f"{tai64n()}.s", src_dir_fd=dfd, dst_dir_fd=dfd)
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
        try:
            old = sorted(n for n in os.listdir(listing) if n.startswith("@") and n.endswith(".s"))
        finally:
            os.close(listing)
        for stale in old[: max(0, len(old) - self.keep)]:
            try:
                os.unlink(stale, dir_fd=dfd)
            except FileNotFoundError:
                pass
        self._fd = self._open()

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            os.close(self._dir_fd)

    # ---- several lines in one write (the send log's buffer, delivery/sendlog.py) ----------
    def encode(self, line: str) -> bytes:
        """`line` as `write` writes it: stamped now, control characters made visible."""
        clean = line if line.isprintable() else _visible(line)
        return f"{tai64n()} {clean}\n".encode("utf-8", "replace")

    def encode_lines(self, lines: list[str]) -> bytes:
        """`lines` as `write` would write each, with one stamp for all (they arrived at once)."""
        stamp = tai64n()
        return "".join(
            f"{stamp} {line if line.isprintable() else _visible(line)}\n" for line in lines
        ).encode("utf-8", "replace")

    def flush(self) -> None:
        """Nothing to do: a LogDir writes each line at once (a worker's LogPipe holds its
        lines a moment; the SMTP conversation flushes after logging an accepted message)."""

    def write_encoded(self, data: bytes) -> None:
        """Append lines made by `encode` in one write; rotates as `write` does."""
        with self._lock:
            os.write(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
            if os.fstat(self._fd).st_size >= self.max_bytes:
                self._rotate()

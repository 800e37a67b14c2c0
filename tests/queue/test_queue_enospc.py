"""A full disk: inject fails with a temporary QueueError and leaves nothing half-written.

The queue is put on a 1 MB tmpfs mounted for the test (we run as root on the test machines;
the mount is the real kernel's ENOSPC, not a simulation).
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.queue import Envelope, Queue, QueueError

SIZE = "1m"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="mailyard-enospc-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"this test mounts a tmpfs and needs root: {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def _leftovers(q: Queue) -> list[str]:
    return sorted(str(p.relative_to(q.root)) for p in q.root.rglob("*")
                  if p.is_file() and p.name != "sendmutex")


def _fill(path: Path) -> None:
    """Write until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_message_larger_than_the_free_space_is_refused_cleanly(small_disk: Path) -> None:
    q = Queue(small_disk / "queue")
    with pytest.raises(QueueError) as caught:
        with q.open_message() as w:
            for _ in range(40):
                w.write(b"x" * 65536)
            w.commit(Envelope(sender="a@example.org", recipients=["b@example.net"]))
    assert caught.value.temporary
    assert "No space left on device" in str(caught.value)
    assert _leftovers(q) == []
    assert q.counts() == {"todo": 0, "local": 0, "remote": 0}


def test_full_disk_at_the_envelope_removes_the_message_data(small_disk: Path) -> None:
    q = Queue(small_disk / "queue")
    filler = small_disk / "filler"
    with pytest.raises(QueueError) as caught:
        with q.open_message() as w:
            w.write(b"Subject: fits\n\n" + b"y" * 10000)
            _ = w.path  # the data is on disk now
            _fill(filler)  # nothing left for the envelope
            w.commit(Envelope(sender="a@example.org", recipients=["b@example.net"]))
    assert caught.value.temporary
    assert _leftovers(q) == []
    filler.unlink()
    with q.open_message() as w:  # with space again, the queue works as before
        w.write(b"Subject: after\n\nok\n")
        qid = w.commit(Envelope(sender="a@example.org", recipients=["b@example.net"]))
    assert sorted(_leftovers(q)) == [f"mess/{qid}", f"todo/{qid}"]
    assert os.path.getsize(q.root / "mess" / qid) == len(b"Subject: after\n\nok\n")

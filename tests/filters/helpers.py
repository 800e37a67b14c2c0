"""Helpers of the filter tests: real spamd and clamd daemons, test messages, settings."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.conftest import free_port_base

from mailyard.filters import clamd, clamscan, spamc, spamd
from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.store.settings_store import load_settings

# spamd needs 1.5-5 s to load its rules on these machines; a loaded CI box can take much
# longer, and waiting costs nothing when it is ready early.
READY_TIMEOUT = 120.0

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def message(body: str = "Hello, this is an ordinary note about lunch on Friday.",
            subject: str = "lunch", sender: str = "alice@example.org",
            to: str = "bob@example.com", msgid: str = "<note-1@example.org>") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"{body}\r\n").encode()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class Daemon:
    """A real daemon started from the node's own exec_argv, in its own process group."""

    def __init__(self, name: str, home: Home, argv_fn, ready_fn) -> None:  # type: ignore[no-untyped-def]
        self.name = name
        self.home = home
        self.argv_fn = argv_fn
        self.ready_fn = ready_fn
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home.root / f"{name}.test-output"

    def start(self) -> None:
        argv = self.argv_fn(self.home)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready_fn(self.home):
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}: "
                            f"{self.log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not ready after {READY_TIMEOUT} s: "
                            f"{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Spamd(Daemon):
    def __init__(self, home: Home) -> None:
        super().__init__("spamd", home, spamd.exec_argv,
                         lambda h: run(spamc.ping(spamd.socket_path(h), timeout=5)))

    def reload(self) -> None:
        """Render the config again and SIGHUP spamd, as the supervision layer's reload does;
        wait until the restarted server answers (its log says so first)."""
        marker = "server started on"
        before = self.log.read_text(errors="replace").count(marker)
        spamd.exec_argv(self.home)
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + READY_TIMEOUT
        while self.log.read_text(errors="replace").count(marker) <= before:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"spamd did not restart: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.wait_ready()


class Clamd(Daemon):
    def __init__(self, home: Home) -> None:
        super().__init__("clamd", home, clamd.exec_argv,
                         lambda h: run(clamscan.ping(clamd.socket_path(h), timeout=5)))


@contextmanager
def reachable_home() -> Iterator[Home]:
    """A node home that the daemons' own users can reach, removed afterwards.

    As root the daemons drop privileges (spamd to the mail owner, clamd to clamav), so the
    home's parents must be traversable by them. pytest's tmp_path cannot be used: every pytest
    run that starts on this machine resets /tmp/pytest-of-<user> to mode 0700 (a safety
    measure of pytest's), which would cut a running daemon off from its config mid-test.
    """
    base = Path(tempfile.mkdtemp(prefix="mailyard-filters-", dir="/tmp"))
    os.chmod(base, 0o711)
    try:
        node, _ = init_home(base / "node", "mx.example.test", port_base=free_port_base())
        yield node
    finally:
        shutil.rmtree(base, ignore_errors=True)


def settings_of(home: Home, **overrides: object) -> dict[str, object]:
    """The node's settings with some values replaced (keys with __ for dots)."""
    values: dict[str, object] = dict(load_settings(home))
    for key, value in overrides.items():
        values[key.replace("__", ".")] = value
    return values

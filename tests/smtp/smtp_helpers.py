"""Helpers of the SMTP tests: starting the real services, looking into the queue, raw clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port_base  # noqa: E402,F401
from tests.waiting import wait_until  # noqa: F401 (re-exported for the tests)

from mailyard.home import Home
from mailyard.services.privileges import mail_owner, running_as_root
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
JOE = "joe@example.org"
JOE_PASSWORD = "correct horse battery"
# Generous: a service starts in about a second; a loaded CI machine may take far longer.
START_TIMEOUT = 60.0


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def give_store_to_mail_owner(home: Home) -> None:
    """The services drop root for the `mailyard` user and then read the store; an SQLite
    store (and its directory, where SQLite puts its -wal and -shm files) must be theirs.
    `mailyard init` does not do this yet (reported to the lead); tests do it here."""
    if not running_as_root() or not home.db_url.startswith("sqlite"):
        return
    uid, gid = mail_owner()
    os.chown(home.root, uid, gid)
    for path in home.root.glob("store.sqlite*"):
        os.chown(path, uid, gid)


def change(home: Home, values: dict[str, object]) -> None:
    """Store settings as `mailyard settings set` does (the service reads them at start)."""
    for key, value in values.items():
        set_setting(home, key, value)
    dispose_all()
    give_store_to_mail_owner(home)


@dataclass
class Service:
    name: str
    home: Home
    proc: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.home.service_log_dir(self.name) / "current"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.log()
            if text in content:
                return content
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the {self.name} log:\n{self.log()}\n"
                             f"stderr: {self._stderr()}")

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def hup(self) -> None:
        before = self.log().count("reload service=")
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while self.log().count("reload service=") == before:
            assert time.monotonic() < deadline, "no reload in the log"
            time.sleep(0.05)


def start_service(home: Home, name: str) -> Service:
    code = (f"from mailyard.home import Home; from mailyard.smtp.service import run_{name}; "
            f"run_{name}(Home.find({str(home.root)!r}))")
    proc = subprocess.Popen([PYTHON, "-c", code], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    service = Service(name, home, proc)
    try:
        service.wait_log(f"service={name} pid={proc.pid} ", timeout=START_TIMEOUT)
    except BaseException:
        service.stop()
        raise
    return service


# ---- looking into the queue ---------------------------------------------------------------------


def queue_entries(home: Home) -> list[tuple[dict, bytes]]:
    """(envelope, message) of every committed message, oldest first."""
    out = []
    todo = home.queue_dir / "todo"
    for entry in sorted(todo.iterdir(), key=lambda p: p.stat().st_mtime) if todo.exists() else []:
        envelope = json.loads(entry.read_bytes())
        out.append((envelope, (home.queue_dir / "mess" / entry.name).read_bytes()))
    return out


def leftovers(home: Home) -> list[str]:
    """Every file in the queue's directories other than the trigger FIFO."""
    found = []
    for path in home.queue_dir.rglob("*"):
        if path.is_file() and path.name != "trigger":
            found.append(str(path.relative_to(home.queue_dir)))
    return sorted(found)


class RawClient:
    """A plain socket client for what smtplib will not send (bad bytes, pipelining, stalls)."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One complete (possibly multi-line) reply, lines joined with CRLF."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got so far {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"\r\n".join(lines)

    def code(self) -> int:
        return int(self.reply()[:3])

    def closed(self) -> bool:
        """True when the server has closed the connection (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def read_to_end(self) -> bytes:
        """Everything the server still sends until it closes the connection."""
        data = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()

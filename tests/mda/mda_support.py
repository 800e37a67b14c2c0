"""Helpers for the MDA tests: a node with mailboxes, a real Dovecot, real clients.

Dovecot is started exactly as supervisord starts it (the argv of exec_argv) in a session of its
own, and its whole process group is killed at teardown. Clients connect to 127.0.0.1; a client
that must come from elsewhere (a network without plaintext logins, a failed login whose
penalty must not slow the other tests) binds another loopback address, 127.0.0.X.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import signal
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port_base  # noqa: E402,F401

from mailyard.home import Home
from mailyard.mda import dovecot, master
from mailyard.mda.config import paths
from mailyard.mda.listeners import LISTENERS
from mailyard.nodeinit import init_home
from mailyard.services.privileges import mail_owner
from mailyard.store.accounts import add_domain, add_mailbox

DOMAIN = "example.test"
PASSWORD = "correct horse 1"
# Generous: Dovecot is ready in ~0.05 s; a loaded CI machine may take far longer.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# A client gives up on a silent server after this long; every test expects an answer first.
CLIENT_TIMEOUT = 60.0


def short_tmp(prefix: str) -> Path:
    """A fresh directory with a short path: Dovecot's sockets live below the home and unix
    socket paths may not exceed 107 bytes (pytest's own tmp paths can be long)."""
    path = Path("/tmp") / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o755)
    return path




def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def make_node(root: Path, users: tuple[str, ...] = ("alice", "bob"),
              db_url: str | None = None) -> Home:
    """An initialised node under `root` with the domain example.test and one mailbox per
    user name, all with PASSWORD."""
    home, _ = init_home(root / "node", "mx.example.test", port_base=free_port_base(),
                        db_url=db_url)
    add_domain(home, DOMAIN)
    for user in users:
        add_mailbox(home, f"{user}@{DOMAIN}", PASSWORD)
    return home


@dataclass
class RunningDovecot:
    home: Home
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def port(self, listener: str) -> int:
        return self.home.port(listener)


def start_dovecot(home: Home) -> RunningDovecot:
    """Start the node's Dovecot as the supervisor would and wait until its listeners listen."""
    argv = dovecot.exec_argv(home)
    log = home.log_dir / "dovecot-test.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    running = RunningDovecot(home, proc, log)
    from mailyard.store.settings_store import load_settings

    settings = load_settings(home)
    on = [name for name, enabled in dovecot.listeners.enabled(home, settings).items() if enabled]
    ports = [home.port(name, settings) for name in on]
    deadline = time.monotonic() + START_TIMEOUT
    while not (dovecot.master_running(home) and all(master.listening(p) for p in ports)):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_dovecot(running)
            raise AssertionError(f"Dovecot did not start:\n{running.log_text()}")
        time.sleep(0.05)
    return running


def stop_dovecot(running: RunningDovecot) -> None:
    """SIGTERM to the master (it stops its children), then SIGKILL to whatever is left."""
    running.proc.terminate()
    try:
        running.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(running.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    running.proc.wait(timeout=STOP_TIMEOUT)
    base_dir = paths(running.home).base_dir
    deadline = time.monotonic() + STOP_TIMEOUT
    while master.master_pid(base_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


# ---- clients ----------------------------------------------------------------------------------


def tls_context(home: Home) -> ssl.SSLContext:
    """A client context that trusts only the node's own (self-signed) certificate."""
    return ssl.create_default_context(cafile=str(home.cert_file))


def _connect(host: str, port: int, timeout: float | None, source: str | None) -> socket.socket:
    return socket.create_connection((host, port), timeout,
                                    source_address=(source, 0) if source else None)


class IMAP(imaplib.IMAP4):
    """imaplib's client, optionally from another loopback address."""

    def __init__(self, port: int, source: str | None = None, host: str = "127.0.0.1") -> None:
        self._source = source
        super().__init__(host, port, timeout=CLIENT_TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _connect(self.host, self.port, timeout, self._source)


class IMAPS(imaplib.IMAP4_SSL):
    def __init__(self, port: int, context: ssl.SSLContext, source: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self._source = source
        super().__init__(host, port, ssl_context=context, timeout=CLIENT_TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = _connect(self.host, self.port, timeout, self._source)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class POP3(poplib.POP3):
    def __init__(self, port: int, source: str | None = None, host: str = "127.0.0.1") -> None:
        self._source = source
        super().__init__(host, port, timeout=CLIENT_TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _connect(self.host, self.port, timeout, self._source)


class POP3S(poplib.POP3_SSL):
    def __init__(self, port: int, context: ssl.SSLContext, source: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self._source = source
        super().__init__(host, port, context=context, timeout=CLIENT_TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = _connect(self.host, self.port, timeout, self._source)
        return self.context.wrap_socket(sock, server_hostname=self.host)


# ---- mail -------------------------------------------------------------------------------------

_counter = 0


def message_bytes(subject: str, body: str = "Hello from the tests.\n") -> bytes:
    text = (f"From: Sender <sender@remote.test>\nTo: alice@{DOMAIN}\nSubject: {subject}\n"
            f"Message-ID: <{uuid.uuid4().hex}@remote.test>\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\n\n" + body)
    return text.encode()


def place_message(home: Home, address: str, subject: str, folder: str = "INBOX") -> Path:
    """Deliver a message into a Maildir as a delivery agent does: write it under tmp/, fsync,
    link it into new/ under a unique name, owned by the mail owner."""
    global _counter
    _counter += 1
    maildir = home.maildir(address)
    target = maildir if folder == "INBOX" else maildir / f".{folder}"
    name = f"{int(time.time())}.M{_counter}P{os.getpid()}.{socket.gethostname()}"
    tmp = target / "tmp" / name
    data = message_bytes(subject)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    uid, gid = mail_owner()
    os.chown(tmp, uid, gid)
    final = target / "new" / f"{name},S={len(data)}"
    os.link(tmp, final)
    os.unlink(tmp)
    return final


__all__ = ["DOMAIN", "IMAP", "IMAPS", "LISTENERS", "PASSWORD", "POP3", "POP3S", "make_node",
           "RunningDovecot", "add_domain", "add_mailbox", "init_home", "place_message",
           "short_tmp", "start_dovecot", "stop_dovecot", "tls_context"]

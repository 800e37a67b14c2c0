"""spamd and clamd are reached only by the mail owner's processes and root (issue 16, item 12).

Over TCP on 127.0.0.1 every local user could teach spamd's Bayes (TELL) or stop clamd
(SHUTDOWN). Both now listen on unix sockets that only the mail owner's group reaches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.filters.helpers import run

from mailyard.filters import clamd, clamscan, spamc, spamd
from mailyard.services.privileges import MAIL_USER
from mailyard.services.readiness import _tree

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs other users to try")

CONNECT = ("import socket, sys\n"
           "s = socket.socket(socket.AF_UNIX)\n"
           "try:\n"
           "    s.connect(sys.argv[1])\n"
           "except OSError as exc:\n"
           "    print(type(exc).__name__); sys.exit(3)\n"
           "s.sendall(sys.argv[2].encode().decode('unicode_escape').encode('latin-1'))\n"
           "print(s.recv(200))\n")


def connect_as(user: str, path: Path, data: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", CONNECT,
                           str(path), data], capture_output=True, text=True, timeout=60)


def tcp_listeners_of(pid: int) -> set[str]:
    """The TCP listening sockets (any port) held by `pid` and its children."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                inodes.add(fields[9])
    held = set()
    for child in _tree(pid):
        try:
            for fd in os.listdir(f"/proc/{child}/fd"):
                target = os.readlink(f"/proc/{child}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held.add(target)
        except OSError:
            continue
    return held


def test_spamd_has_no_tcp_listener(spamd_server):
    assert spamd_server.proc is not None
    assert tcp_listeners_of(spamd_server.proc.pid) == set()
    assert run(spamc.ping(spamd.socket_path(spamd_server.home)))


def test_clamd_has_no_tcp_listener(clamd_server):
    assert clamd_server.proc is not None
    assert tcp_listeners_of(clamd_server.proc.pid) == set()
    assert run(clamscan.ping(clamd.socket_path(clamd_server.home)))


@needs_root
def test_another_local_user_cannot_tell_spamd_anything(spamd_server):
    path = spamd.socket_path(spamd_server.home)
    tell = "TELL SPAMC/1.5\\r\\nMessage-class: spam\\r\\nSet: local\\r\\nUser: x@y\\r\\n\\r\\n"
    other = connect_as("nobody", path, tell)
    assert other.returncode == 3 and "PermissionError" in other.stdout, other
    own = connect_as(MAIL_USER, path, "PING SPAMC/1.5\\r\\n\\r\\n")
    assert own.returncode == 0 and "PONG" in own.stdout, own


@needs_root
def test_another_local_user_cannot_shut_clamd_down(clamd_server):
    path = clamd.socket_path(clamd_server.home)
    other = connect_as("nobody", path, "zSHUTDOWN\\0")
    assert other.returncode == 3 and "PermissionError" in other.stdout, other
    assert clamd_server.running()
    own = connect_as(MAIL_USER, path, "zPING\\0")
    assert own.returncode == 0 and "PONG" in own.stdout, own
    assert run(clamscan.ping(path))

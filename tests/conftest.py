"""Shared fixtures: a fresh node home on free loopback ports for every test that asks."""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path

import pytest

from mailyard.home import STANDARD_PORTS, Home
from mailyard.nodeinit import init_home

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base() -> int:
    """A port base under which every standard port of a node is free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        ports = [base + p for p in STANDARD_PORTS.values()]
        if max(ports) < 65000 and all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free port base found")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """An initialised node home (SQLite store) with hostname mx.example.test, not started."""
    node, _ = init_home(tmp_path / "node", "mx.example.test", port_base=free_port_base())
    return node


@pytest.fixture
def cli_env(home: Home) -> dict[str, str]:
    """Environment for running the node's programs against `home` as subprocesses."""
    env = dict(os.environ)
    env["MAILYARD_HOME"] = str(home.root)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env

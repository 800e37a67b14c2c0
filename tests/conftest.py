"""Shared fixtures: a fresh node home on free loopback ports for every test that asks."""

from __future__ import annotations

import os
import random
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.dns_support import DnsServer, running_dns_server

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


# Port bases are drawn below the kernel's ephemeral range (32768-60999 here): a port chosen
# there can be taken a moment later by any outgoing connection (to spamd, PostgreSQL, ...).
PORT_BASE_RANGE = (10000, 29000)


def free_port_base() -> int:
    """A port base under which every standard port of a node is free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(*PORT_BASE_RANGE, 10)
        ports = [base + p for p in STANDARD_PORTS.values()]
        if max(ports) < 65000 and all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free port base found")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(request: pytest.FixtureRequest) -> Home:
    """An initialised node home (SQLite store) with hostname mx.example.test, not started.

    It lives under /tmp rather than pytest's private (0700) temporary root, because services
    started as root drop to the `mailyard` user, which must be able to reach the home."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mailyard-test-", dir="/tmp"))
    os.chmod(base, 0o711)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    node, _ = init_home(base / "node", "mx.example.test", port_base=free_port_base())
    return node


@pytest.fixture
def cli_env(home: Home) -> dict[str, str]:
    """Environment for running the node's programs against `home` as subprocesses."""
    env = dict(os.environ)
    env["MAILYARD_HOME"] = str(home.root)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


# ---- a real PostgreSQL server for the store's tests (and the cluster's later) ----------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer:
    """A private PostgreSQL server on a free loopback port that a test may stop and start again.

    As root the server runs as the `postgres` system user (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        import pwd
        import subprocess
        import tempfile

        if not (PG_BIN / "initdb").exists():
            pytest.fail("PostgreSQL server binaries are missing: `make test` installs package "
                        "postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="mailyard-pg-", dir="/tmp"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        subprocess.run(self.prefix + [str(PG_BIN / "initdb"), "-D", str(self.data), "-A",
                                      "trust", "-U", "mailyard", "--no-sync"],
                       check=True, capture_output=True)
        self.port = free_port()
        self.url = f"postgresql://mailyard@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import subprocess
        import time

        import psycopg

        self.proc = subprocess.Popen(
            self.prefix + [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                           "-k", str(self.root), "-h", "127.0.0.1", "-F"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user=mailyard "
                                "dbname=postgres").close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    pytest.fail("the test PostgreSQL server did not start")
                time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, as when the server goes away."""
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        # To the whole group: as root, runuser stands between us and the postmaster and does
        # not pass SIGINT on.
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import uuid

        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=mailyard "
                             "dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://mailyard@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """One private PostgreSQL server for the whole run; yields its admin URL and port."""
    server = PostgresServer()
    yield {"url": server.url, "port": server.port, "server": server}
    server.remove()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, which the test may stop and start again."""
    server = PostgresServer()
    yield server
    server.remove()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A fresh, empty database on the test PostgreSQL server."""
    return postgres_server["server"].new_database()



# ---- a DNS server on loopback (UDP and TCP on one port) ---------------------------------------


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """Answers from the records a test adds (see tests/dns_support.py)."""
    with running_dns_server() as server:
        yield server

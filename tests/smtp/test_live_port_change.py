"""Changing the Alternate SMTP Port, the SMTPS port or the listen address of a running node
takes effect at once: the service is restarted through the supervisor (it bound its ports as
root and dropped root, so it could not bind a port below 1024 again itself), the new port
answers and the old one is closed."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_helpers import give_store_to_mail_owner
from tests.waiting import wait_for

from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.services import control
from mailyard.services.apply_settings import change_settings
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_many

ALL = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd", "clamd",
       "freshclam", "panel")
# Generous: a restart takes about a second; nothing here is a threshold.
WAIT_S = 60.0


def free_low_ports(count: int, start: int = 900, stop: int = 1000) -> list[int]:
    """Ports below 1024 that nothing on 127.0.0.1 (or on every address) uses now."""
    found: list[int] = []
    for port in range(start, stop):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    pytest.fail(f"fewer than {count} free ports in {start}-{stop}")


def banner(host: str, port: int, tls: bool = False) -> str | None:
    """The first line a client sees, or None when nothing answers there."""
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError:
        return None
    with sock:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        line = sock.makefile("rb").readline().decode()
        return line.strip() or None


@pytest.fixture
def low_port_node() -> Iterator[tuple[Home, list[int]]]:
    """A node with port base 0 whose alternate SMTP server runs on ports below 1024."""
    if os.geteuid() != 0:
        pytest.skip("binding ports below 1024 needs root (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="mailyard-ports-", dir="/tmp"))
    os.chmod(base, 0o711)
    home, _ = init_home(base / "node", "mx.example.test", port_base=0)
    ports = free_low_ports(4)
    set_many(home, {f"service.{name}.start_on_boot": name == "submission" for name in ALL})
    set_many(home, {"submission.port": ports[0], "submission.smtps_port": ports[1]})
    dispose_all()
    give_store_to_mail_owner(home)
    try:
        control.up(home, timeout=90)
        yield home, ports
    finally:
        control.down(home)
        dispose_all()
        shutil.rmtree(base, ignore_errors=True)


def test_a_new_alternate_port_below_1024_is_served_and_the_old_one_closed(
        low_port_node: tuple[Home, list[int]]) -> None:
    home, (old, old_tls, new, new_tls) = low_port_node
    assert (banner("127.0.0.1", old) or "").startswith("220 ")
    assert (banner("127.0.0.1", old_tls, tls=True) or "").startswith("220 ")
    pid = control.status(home, with_versions=False)

    result = change_settings(home, {"submission.port": new, "submission.smtps_port": new_tls})
    assert result.restarted == ["submission"] and result.problems == []
    assert (wait_for(lambda: banner("127.0.0.1", new), "the new port") or "").startswith("220 ")
    assert (banner("127.0.0.1", new_tls, tls=True) or "").startswith("220 ")
    assert banner("127.0.0.1", old) is None and banner("127.0.0.1", old_tls) is None
    after = control.status(home, with_versions=False)
    [before_pid] = [s.pid for s in pid if s.name == "submission"]
    [after_pid] = [s.pid for s in after if s.name == "submission"]
    assert after_pid != before_pid
    log = (home.service_log_dir("submission") / "current").read_text()
    assert f"pid={after_pid} uid=0 " not in log  # it dropped root again after binding
    assert f"pid={after_pid} uid=" in log and f"ports={new},{new_tls}/tls" in log


def test_the_listen_address_moves_the_listeners(low_port_node: tuple[Home, list[int]]) -> None:
    home, (port, *_rest) = low_port_node
    assert banner("127.0.0.3", port) is not None  # every address at first
    result = change_settings(home, {"smtp.listen_address": "127.0.0.1"})
    assert result.restarted == ["submission"]  # smtp is not running on this node
    wait_for(lambda: banner("127.0.0.3", port) is None, "the other address to close")
    assert (wait_for(lambda: banner("127.0.0.1", port), "127.0.0.1") or "").startswith("220 ")


def test_saving_the_same_port_again_restarts_nothing(low_port_node: tuple[Home, list[int]]
                                                     ) -> None:
    home, (port, *_rest) = low_port_node
    result = change_settings(home, {"submission.port": port,
                                    "submission.auth_mode": "auth_required/tls_required"})
    assert result.restarted == [] and result.reloaded == ["submission"]
    assert banner("127.0.0.1", port) is not None

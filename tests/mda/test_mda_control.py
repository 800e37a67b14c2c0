"""The control hook: four services switched separately on one Dovecot; settings after reload."""

from __future__ import annotations

import imaplib
import poplib
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from mda_support import (
    DOMAIN,
    IMAP,
    IMAPS,
    PASSWORD,
    POP3,
    POP3S,
    RunningDovecot,
    make_node,
    short_tmp,
    start_dovecot,
    stop_dovecot,
    tls_context,
)
from tests.waiting import wait_until

from mailyard.mda import dovecot, master
from mailyard.mda.config import conf_path, paths
from mailyard.services.control import ControlError
from mailyard.store.settings_store import set_setting

ALICE = f"alice@{DOMAIN}"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def node() -> Iterator[RunningDovecot]:
    root = short_tmp("mda-control")
    home = make_node(root, users=("alice", "bob", "memo"))
    running = start_dovecot(home)
    yield running
    stop_dovecot(running)
    shutil.rmtree(root, ignore_errors=True)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def test_all_four_run_after_start(node):
    for service in ("pop3", "pop3s", "imap", "imaps"):
        assert dovecot.control(node.home, service, "status") == "RUNNING"
        assert master.listening(node.port(service))


def test_stopping_imaps_closes_it_and_leaves_the_others_serving(node):
    home = node.home
    secure = IMAPS(node.port("imaps"), tls_context(home))
    secure.login(ALICE, PASSWORD)
    secure.select()
    plain = IMAP(node.port("imap"))
    plain.login(ALICE, PASSWORD)
    plain.select()

    assert dovecot.control(home, "imaps", "stop") == "STOPPED"
    try:
        assert _refused(node.port("imaps"))
        with pytest.raises(imaplib.IMAP4.abort):  # its clients were disconnected
            secure.noop()
        assert plain.noop()[0] == "OK"  # imap's clients were not
        assert dovecot.control(home, "imaps", "status") == "STOPPED"
        for other in ("pop3", "pop3s", "imap"):
            assert dovecot.control(home, other, "status") == "RUNNING"
        fresh = IMAP(node.port("imap"))
        assert fresh.login(ALICE, PASSWORD)[0] == "OK"
        fresh.logout()
        pop = POP3S(node.port("pop3s"), tls_context(home))
        pop.user(ALICE)
        assert pop.pass_(PASSWORD).startswith(b"+OK")
        pop.quit()
    finally:
        assert dovecot.control(home, "imaps", "start") == "RUNNING"
    again = IMAPS(node.port("imaps"), tls_context(home))
    assert again.login(ALICE, PASSWORD)[0] == "OK"
    again.logout()
    plain.logout()


def test_stopping_pop3_ends_its_plain_sessions_too(node):
    # A plain POP3 client is served by a pop3 process directly (no TLS proxy in between).
    home = node.home
    pop = POP3(node.port("pop3"))
    pop.user(f"bob@{DOMAIN}")
    pop.pass_(PASSWORD)
    assert dovecot.control(home, "pop3", "stop") == "STOPPED"
    try:
        assert _refused(node.port("pop3"))
        with pytest.raises((poplib.error_proto, OSError)):
            pop.stat()
    finally:
        assert dovecot.control(home, "pop3", "start") == "RUNNING"
    pop = POP3(node.port("pop3"))
    pop.user(f"bob@{DOMAIN}")
    assert pop.pass_(PASSWORD).startswith(b"+OK")
    pop.quit()


def test_restart_of_one_service_keeps_the_others_clients(node):
    home = node.home
    plain = IMAP(node.port("imap"))
    plain.login(ALICE, PASSWORD)
    assert dovecot.control(home, "imaps", "restart") == "RUNNING"
    assert plain.noop()[0] == "OK"
    client = IMAPS(node.port("imaps"), tls_context(home))
    assert client.login(ALICE, PASSWORD)[0] == "OK"
    client.logout()
    plain.logout()


def test_a_stopped_listener_stays_stopped_when_dovecot_starts_again(node, tmp_path: Path):
    home = node.home
    assert dovecot.control(home, "pop3s", "stop") == "STOPPED"
    stop_dovecot(node)
    try:
        assert not dovecot.master_running(home)
        for service in ("pop3", "pop3s", "imap", "imaps"):
            assert dovecot.control(home, service, "status") == "STOPPED"
        restarted = start_dovecot(home)
        node.proc = restarted.proc
        assert _refused(node.port("pop3s"))
        assert dovecot.control(home, "pop3s", "status") == "STOPPED"
        assert dovecot.control(home, "imap", "status") == "RUNNING"
    finally:
        assert dovecot.control(home, "pop3s", "start") == "RUNNING"
    assert master.listening(node.port("pop3s"))


def test_start_while_dovecot_is_down_only_records_the_switch(tmp_path: Path):
    root = short_tmp("mda-down")
    try:
        home = make_node(root, users=())
        assert dovecot.control(home, "imap", "stop") == "STOPPED"
        assert "inet_listener imap {\n    port = 0\n" in conf_path(home).read_text()
        assert dovecot.control(home, "imap", "start") == "STOPPED"  # Dovecot is not running
        assert f"port = {home.port('imap')}" in conf_path(home).read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_unknown_service_or_action_is_refused_clearly(node):
    with pytest.raises(ControlError, match="'smtp' is not a Dovecot service.*pop3, pop3s"):
        dovecot.control(node.home, "smtp", "status")
    with pytest.raises(ControlError, match="unknown action 'pause' for imap; actions are start"):
        dovecot.control(node.home, "imap", "pause")


def test_exec_argv_refuses_a_second_dovecot_for_the_node(node):
    with pytest.raises(ControlError, match="already runs for this node"):
        dovecot.exec_argv(node.home)


def _sessions(master_pid: int, address: str) -> set[int]:
    """The mail processes serving `address` (Dovecot shows the user in its process title)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == master_pid and f"[{address} " in cmdline:
            found.add(int(entry.name))
    return found


def _new_session(master_pid: int, address: str, before: set[int]) -> int:
    """The process of the session just logged in: one not in `before`, waited for (Dovecot
    titles it a moment after the login's reply; an earlier session may still be ending)."""
    new = wait_until(lambda: _sessions(master_pid, address) - before,
                     what=f"the Dovecot process serving {address}")
    return max(new)


def _address_space_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return int(line.split()[3])
    raise AssertionError("no address space limit listed")


def test_memory_limit_setting_reaches_new_processes_after_reload(node):
    home = node.home
    memo = f"memo@{DOMAIN}"
    set_setting(home, "imaps.memory_limit_mb", 300)
    set_setting(home, "pop3.memory_limit_mb", 200)
    assert dovecot.control(home, "imaps", "reload") == "RUNNING"
    text = conf_path(home).read_text()
    assert "service imaps {" in text and "vsz_limit = 300 M" in text
    pid = master.master_pid(paths(home).base_dir)
    assert pid is not None

    before = _sessions(pid, memo)
    client = IMAPS(node.port("imaps"), tls_context(home))
    client.login(memo, PASSWORD)
    client.select()
    assert _address_space_limit(_new_session(pid, memo, before)) == 300 * MB
    client.logout()

    before = _sessions(pid, memo)
    pop = POP3(node.port("pop3"))
    pop.user(memo)
    pop.pass_(PASSWORD)
    assert _address_space_limit(_new_session(pid, memo, before)) == 200 * MB
    pop.quit()

    before = _sessions(pid, memo)
    plain = IMAP(node.port("imap"))  # imap kept its own limit (the default)
    plain.login(memo, PASSWORD)
    plain.select()
    assert _address_space_limit(_new_session(pid, memo, before)) == 256 * MB
    plain.logout()


def test_connection_setting_reaches_the_master_after_reload(node):
    home = node.home
    set_setting(home, "pop3s.max_connections", 7)
    dovecot.control(home, "pop3s", "reload")
    limits = master.service_limits(conf_path(home))
    assert limits["pop3s"] == (7, 1)
    assert limits["pop3s-login"][1] == 7 + 16
    assert limits["pop3"] == (50, 1)  # the plain service keeps its own cap


def test_plaintext_login_is_refused_outside_the_plaintext_networks(node):
    home = node.home
    set_setting(home, "mda.plaintext_networks", "127.0.0.5/32")
    dovecot.control(home, "imap", "reload")
    try:
        outsider = IMAP(node.port("imap"), source="127.0.0.6")
        assert "LOGINDISABLED" in outsider.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED|disallowed"):
            outsider.login(ALICE, PASSWORD)
        outsider = IMAP(node.port("imap"), source="127.0.0.6")
        outsider.starttls(ssl_context=tls_context(home))
        assert outsider.login(ALICE, PASSWORD)[0] == "OK"  # with TLS first, the same works
        outsider.logout()
        pop = POP3(node.port("pop3"), source="127.0.0.6")
        with pytest.raises(poplib.error_proto, match="disallowed"):  # refused already at USER
            pop.user(ALICE)
        insider = IMAP(node.port("imap"), source="127.0.0.5")
        assert insider.login(ALICE, PASSWORD)[0] == "OK"
        insider.logout()
    finally:
        set_setting(home, "mda.plaintext_networks", "127.0.0.0/8\n::1/128")
        dovecot.control(home, "imap", "reload")


def test_a_replaced_certificate_is_served_after_reload(node):
    from mailyard.services.tls import make_self_signed

    home = node.home
    make_self_signed(home.cert_file, home.key_file, "renewed.example.test")
    assert dovecot.control(home, "imaps", "reload") == "RUNNING"
    client = IMAPS(node.port("imaps"), tls_context(home))  # trusts only the new certificate
    subject = dict(x[0] for x in client.sock.getpeercert()["subject"])
    assert subject["commonName"] == "renewed.example.test"
    client.logout()


def test_concurrent_switches_of_two_services_both_take_effect(node):
    from concurrent.futures import ThreadPoolExecutor

    home = node.home
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: dovecot.control(home, s, "stop"), ["pop3s", "imaps"]))
    try:
        assert results == ["STOPPED", "STOPPED"]
        assert _refused(node.port("pop3s")) and _refused(node.port("imaps"))
        assert dovecot.control(home, "imap", "status") == "RUNNING"
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda s: dovecot.control(home, s, "start"),
                                    ["pop3s", "imaps"]))
    assert results == ["RUNNING", "RUNNING"]
    assert master.listening(node.port("pop3s")) and master.listening(node.port("imaps"))

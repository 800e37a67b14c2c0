"""Connection caps under load: over the cap a client is refused, never left waiting forever.

Dovecot holds the login that would exceed a service's cap for up to 10 s (its master waits
for a process to become free) and then closes it, so the refused clients of a burst all get
their answer about 10 s after they logged in.
"""

from __future__ import annotations

import imaplib
import poplib
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from mda_support import (
    DOMAIN,
    IMAP,
    IMAPS,
    PASSWORD,
    POP3,
    RunningDovecot,
    make_node,
    short_tmp,
    start_dovecot,
    stop_dovecot,
    tls_context,
)

from mailyard.mda import dovecot
from mailyard.mda.config import LOGIN_PROCESSES, MIN_PRELOGIN_SLOTS
from mailyard.store.settings_store import set_setting

IMAPS_CAP = 3
POP3_CAP = 2
IMAP_CAP = 2
USERS = ("u1", "u2", "u3", "u4", "u5", "u6")


@pytest.fixture(scope="module")
def node() -> Iterator[RunningDovecot]:
    root = short_tmp("mda-limits")
    home = make_node(root, users=USERS)
    set_setting(home, "imaps.max_connections", IMAPS_CAP)
    set_setting(home, "pop3.max_connections", POP3_CAP)
    set_setting(home, "imap.max_connections", IMAP_CAP)
    running = start_dovecot(home)
    yield running
    stop_dovecot(running)
    shutil.rmtree(root, ignore_errors=True)


def _user(n: int) -> str:
    return f"{USERS[n % len(USERS)]}@{DOMAIN}"


def _imaps_session(node: RunningDovecot, n: int) -> imaplib.IMAP4:
    client = IMAPS(node.port("imaps"), tls_context(node.home))
    client.login(_user(n), PASSWORD)
    client.select("INBOX")
    return client


def _pop3_session(node: RunningDovecot, n: int) -> poplib.POP3:
    client = POP3(node.port("pop3"))
    client.user(_user(n))
    client.pass_(PASSWORD)
    client.stat()
    return client


def _attempt(make, node, n):
    """("served", client) or ("refused", the error the client saw)."""
    try:
        return "served", make(node, n)
    except TimeoutError as exc:  # a client left hanging: the failure we hunt
        return "hung", exc
    except (imaplib.IMAP4.error, poplib.error_proto, OSError, EOFError) as exc:
        return "refused", exc


def _auth_busy(result) -> bool:
    """A login the password checkers could not take in time (argon2id is costly and the burst
    arrives at once): it says nothing about the connection cap, so it is tried again."""
    outcome, exc = result
    return outcome == "refused" and b"Temporary authentication failure" in str(exc).encode()


def _settle(results, make, node):
    """Retry, one at a time and with the burst's sessions still held, the logins refused only
    because the password checkers were busy."""
    for _ in range(5):
        busy = [i for i, r in enumerate(results) if _auth_busy(r)]
        if not busy:
            return results
        for i in busy:
            results[i] = _attempt(make, node, i)
    return results


def test_connection_caps_hold_under_a_burst(node):
    imaps_clients, pop3_clients = 12, 6
    with ThreadPoolExecutor(max_workers=imaps_clients + pop3_clients) as pool:
        imaps = [pool.submit(_attempt, _imaps_session, node, n) for n in range(imaps_clients)]
        pop3 = [pool.submit(_attempt, _pop3_session, node, n) for n in range(pop3_clients)]
        imaps_results = [f.result() for f in imaps]
        pop3_results = [f.result() for f in pop3]
    imaps_results = _settle(imaps_results, _imaps_session, node)
    pop3_results = _settle(pop3_results, _pop3_session, node)
    try:
        for results, cap, total in ((imaps_results, IMAPS_CAP, imaps_clients),
                                    (pop3_results, POP3_CAP, pop3_clients)):
            outcomes = [outcome for outcome, _ in results]
            assert outcomes.count("hung") == 0, results
            assert outcomes.count("served") == cap, results
            assert outcomes.count("refused") == total - cap, results
        # The caps are per service: imap (plain) still serves while imaps is full.
        plain = IMAP(node.port("imap"))
        assert plain.login(_user(0), PASSWORD)[0] == "OK"
        plain.logout()
    finally:
        for outcome, client in imaps_results + pop3_results:
            if outcome == "served":
                client.logout() if isinstance(client, imaplib.IMAP4) else client.quit()


def test_a_freed_place_is_taken_again_and_a_raised_cap_counts_after_reload(node):
    held = [_imaps_session(node, n) for n in range(IMAPS_CAP)]
    try:
        held.pop().logout()
        held.append(_imaps_session(node, 0))  # the freed place serves the next client
        set_setting(node.home, "imaps.max_connections", IMAPS_CAP + 1)
        assert dovecot.control(node.home, "imaps", "reload") == "RUNNING"
        held.append(_imaps_session(node, 1))  # one more than the old cap, served at once
    finally:
        for client in held:
            client.logout()
        set_setting(node.home, "imaps.max_connections", IMAPS_CAP)
        dovecot.control(node.home, "imaps", "reload")


def _any_told(socks: list[socket.socket], words: bytes, within: float = 30.0) -> bool:
    """Whether any socket received `words` (reading all of them without blocking)."""
    received = {id(s): b"" for s in socks}
    for sock in socks:
        sock.setblocking(False)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for sock in socks:
            try:
                received[id(sock)] += sock.recv(4096)
            except (BlockingIOError, OSError):
                continue
            if words in received[id(sock)]:
                return True
        time.sleep(0.05)
    return False


def test_idle_connections_cannot_lock_out_a_login(node):
    # More silent connections than imap's login processes have places for: Dovecot pushes the
    # oldest of them out instead of making new clients wait behind them.
    places = LOGIN_PROCESSES * (IMAP_CAP + max(IMAP_CAP, MIN_PRELOGIN_SLOTS))
    idle = []
    try:
        for _ in range(places + 10):
            sock = socket.create_connection(("127.0.0.1", node.port("imap")), timeout=60)
            idle.append(sock)
        client = IMAP(node.port("imap"))
        assert client.login(_user(2), PASSWORD)[0] == "OK"
        client.logout()
        # Some of the idle connections were told why they were dropped.
        assert _any_told(idle, b"Connection queue full")
    finally:
        for sock in idle:
            sock.close()


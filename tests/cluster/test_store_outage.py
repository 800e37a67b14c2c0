"""With the shared PostgreSQL store stopped, nodes go on with their local cache (issue 10.5).

Each test runs its own PostgreSQL server, so it can stop it and start it again; the nodes and
their services are real (smtp, send, Dovecot), talked to with smtplib and imaplib.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port_base
from tests.panel.panel_helpers import signin_form_token

from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.services import control
from mailyard.store import accounts, cache, outage
from mailyard.store.cache import cache_info, read_scope
from mailyard.store.health import store_health
from mailyard.store.outage import StoreUnavailable
from mailyard.store.settings_store import load_settings, set_many, set_setting

MAILYARD = str(Path(sys.executable).parent / "mailyard")
SENDMAIL = str(Path(sys.executable).parent / "sendmail")  # ours
ALL_SERVICES = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd",
                "clamd", "freshclam", "panel")
# Polling bound for delivery; never asserted as a speed.
DELIVERY_WAIT_SECONDS = 90


def cli(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILYARD_HOME=str(home.root))
    return subprocess.run([MAILYARD, *args], env=env, capture_output=True, text=True, timeout=90)


@pytest.fixture
def homes_dir(request: pytest.FixtureRequest) -> Path:
    base = Path(tempfile.mkdtemp(prefix="mailyard-outage-", dir="/tmp"))
    os.chmod(base, 0o711)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    return base


def _forget_outage(home: Home) -> None:
    """This test process remembers a dead store for a few seconds; start each phase afresh."""
    outage._outages.pop(home.db_url, None)


def test_reads_fall_back_to_the_cache_and_writes_are_refused(own_postgres, homes_dir):
    home, _ = init_home(homes_dir / "solo", "mx.example.test", port_base=free_port_base(),
                        db_url=own_postgres.new_database(), node_name="solo")
    accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, "ann@example.test", "ann password")
    accounts.add_alias(home, "sales@example.test", ["ann@example.test"])
    set_setting(home, "smtp.greeting", "cached words", node_only=True)
    info = cli(home, "store", "refresh-cache")
    assert info.returncode == 0, info.stderr
    assert "1 mailboxes, 1 domains" in info.stdout

    own_postgres.stop()
    try:
        assert load_settings(home)["smtp.greeting"] == "cached words"
        assert accounts.get_mailbox(home, "ann@example.test") is not None
        assert accounts.get_alias(home, "sales@example.test").targets == ["ann@example.test"]
        assert accounts.check_mailbox_password(home, "ann@example.test", "ann password")
        assert not accounts.check_mailbox_password(home, "ann@example.test", "wrong")
        assert accounts.is_local_domain(home, "example.test")
        assert accounts.get_mailbox(home, "nobody@example.test") is None
        with pytest.raises(Exception):  # noqa: B017 - the driver's own connection error
            accounts.add_mailbox(home, "bob@example.test", "bob password")
        health = store_health(home)
        assert not health.reachable and health.cache is not None
        assert health.cache.mailboxes == 1
        status = cli(home, "store", "status")
        assert status.returncode == 1
        assert "UNREACHABLE" in status.stdout and "local cache" in status.stdout
        assert "UNREACHABLE" in cli(home, "status").stdout
        refused = cli(home, "store", "refresh-cache")
        assert refused.returncode == 1 and "unchanged" in refused.stderr
        assert cache_info(home).mailboxes == 1  # a failed refresh keeps the copy
    finally:
        own_postgres.start()
    _forget_outage(home)
    accounts.add_mailbox(home, "bob@example.test", "bob password")
    assert accounts.get_mailbox(home, "bob@example.test") is not None  # from the store again
    assert cli(home, "store", "status").returncode == 0
    assert cache_info(home).mailboxes == 1  # until the next refresh


def test_a_refresh_rewrites_the_copy_only_when_the_store_changed(own_postgres, homes_dir):
    import sqlite3

    home, _ = init_home(homes_dir / "fresh", "mx.example.test", port_base=free_port_base(),
                        db_url=own_postgres.new_database(), node_name="fresh")
    accounts.add_domain(home, "example.test")
    cache.refresh_cache(home)
    with sqlite3.connect(cache.cache_path(home)) as db:  # a row the store never had
        db.execute("INSERT INTO domains (name, owner, created_at) "
                   "VALUES ('planted.test', '', '2026-01-01 00:00:00')")
    before = cache_info(home).refreshed_at
    cache.refresh_cache(home)  # nothing changed in the store: the copy is left as it is
    assert cache_info(home).domains == 2 and cache_info(home).refreshed_at > before
    accounts.add_domain(home, "other.test")
    cache.refresh_cache(home)  # a change: the copy is rebuilt from the store
    assert cache_info(home).domains == 2
    with sqlite3.connect(cache.cache_path(home)) as db:
        names = {n for (n,) in db.execute("SELECT name FROM domains")}
    assert names == {"example.test", "other.test"}


def test_without_a_cache_an_unreachable_store_is_said_plainly(own_postgres, homes_dir):
    home, _ = init_home(homes_dir / "bare", "mx.example.test", port_base=free_port_base(),
                        db_url=own_postgres.new_database(), node_name="bare")
    cache.cache_path(home).unlink()
    own_postgres.stop()
    try:
        with pytest.raises(StoreUnavailable, match="no local cache"), read_scope(home):
            pass
    finally:
        own_postgres.start()
    _forget_outage(home)


def _send(home: Home, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "someone@elsewhere.test"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"body of {subject}\n")
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=60) as client:
        client.send_message(message)


def _subjects_over_imap(home: Home, user: str, password: str) -> list[str]:
    client = imaplib.IMAP4("127.0.0.1", home.port("imap"), timeout=60)
    try:
        client.login(user, password)
        client.select("INBOX", readonly=True)
        _, data = client.search(None, "ALL")
        subjects = []
        for num in data[0].split():
            _, parts = client.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects.append(parts[0][1].decode().split(":", 1)[1].strip())
        return subjects
    finally:
        client.logout()


def _wait_for_subjects(home: Home, user: str, password: str, wanted: set[str]) -> list[str]:
    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while True:
        try:
            seen = _subjects_over_imap(home, user, password)
        except imaplib.IMAP4.error as exc:
            assert time.monotonic() < deadline, f"{home.node_name}: {user} cannot log in: {exc}"
            time.sleep(1)
            continue
        if wanted <= set(seen):
            return seen
        assert time.monotonic() < deadline, f"{home.node_name}: only {seen} of {wanted}"
        time.sleep(0.5)


def _wait_for_log(home: Home, pattern: str) -> None:
    """Until the send log has a line matching `pattern` (qmail's format: spaces in a reason
    may be written as underscores)."""
    log = home.service_log_dir("send") / "current"
    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while not (log.exists() and re.search(pattern, log.read_text(errors="replace"))):
        assert time.monotonic() < deadline, f"the send log never matched {pattern!r}"
        time.sleep(0.3)


def _panel_says_the_store_is_away(home: Home, admin_password: str | None) -> None:
    """The admin signs in (checked against the cache) and every page says what is going on."""
    assert admin_password  # the first node's init made the admin
    url = f"https://127.0.0.1:{home.port('panel')}"
    with httpx.Client(base_url=url, verify=False, timeout=60) as web:
        done = web.post("/signin", data={"username": "admin", "password": admin_password,
                                         "csrf_token": signin_form_token(web), "next": "/mta"},
                        headers={"Origin": url})
        assert done.status_code == 303, done.text[:500]
        page = web.get("/mta")
        assert page.status_code == 200, page.text[:500]
        assert 'class="store-away"' in page.text and "UNREACHABLE" in page.text
        assert "local cache" in page.text
        nodes = web.get("/api/v1/cluster/nodes")  # needs the store itself: said, not a 500
        assert nodes.status_code == 503, nodes.text[:500]
        assert "did not answer" in nodes.json()["detail"]


def test_with_the_store_stopped_every_node_accepts_delivers_and_serves_mail(
        own_postgres, homes_dir, request: pytest.FixtureRequest):
    """Three nodes on one store, each running smtp, send and IMAP. With PostgreSQL stopped,
    each accepts mail for a known mailbox, defers an unknown one, delivers and lets the owner
    read it over IMAP; when the store is back, a mailbox created then gets mail: nothing
    accepted during the outage is lost."""
    url = own_postgres.new_database()
    nodes = []
    passwords = []
    for name in ("alpha", "beta", "gamma"):
        home, password = init_home(homes_dir / name, "mx.example.test",
                                   port_base=free_port_base(), db_url=url, node_name=name)
        nodes.append(home)
        passwords.append(password)
    # Every node is stopped at the end, whatever failed (finalizers run after an error too).
    request.addfinalizer(lambda: [control.down(node) for node in nodes])
    alpha = nodes[0]
    accounts.add_domain(alpha, "example.test")
    accounts.add_mailbox(alpha, "ann@example.test", "ann password")
    # The panel runs the cluster agent, which keeps the cache in step and catches up.
    set_many(alpha, {f"service.{n}.start_on_boot": n in ("smtp", "send", "imap", "panel")
                     for n in ALL_SERVICES})
    try:
        for node in nodes:
            control.up(node, timeout=90)  # refreshes each node's cache first
            assert cache_info(node).mailboxes == 1
        own_postgres.stop()
        for node in nodes:
            status = cli(node, "status")
            assert "UNREACHABLE" in status.stdout, status.stdout
            _send(node, "ann@example.test", f"outage via {node.node_name}")
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                _send(node, "nobody@example.test", "to nobody")
            # Not in the cache, but the cache may be older than the mailbox: try again later.
            code = refused.value.recipients["nobody@example.test"][0]
            assert code == 451, refused.value.recipients
        # Mail already queued for an address the cache does not know waits; it never bounces.
        env = dict(os.environ, MAILYARD_HOME=str(alpha.root))
        queued = subprocess.run([SENDMAIL, "-i", "carol@example.test"], env=env, timeout=60,
                                input=b"Subject: for carol\n\nwaiting for the store\n")
        assert queued.returncode == 0
        _wait_for_log(alpha, r"deferral: The.store.is.unreachable.*local.copy")
        _panel_says_the_store_is_away(alpha, passwords[0])
        for node in nodes:
            _wait_for_subjects(node, "ann@example.test", "ann password",
                               {f"outage via {node.node_name}"})
            # A wrong password is still refused. Dovecot calls it a temporary failure while the
            # store (its first source) is away: only the store's "no" is final.
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED|UNAVAILABLE"):
                _subjects_over_imap(node, "ann@example.test", "not her password")
    finally:
        own_postgres.start()
    accounts.add_mailbox(alpha, "bob@example.test", "bob password")
    accounts.add_mailbox(alpha, "carol@example.test", "carol password")
    assert cli(alpha, "queue", "process").returncode == 0
    assert _wait_for_subjects(alpha, "carol@example.test", "carol password",
                              {"for carol"}) == ["for carol"]
    for node in nodes:
        assert cli(node, "store", "status").returncode == 0
        deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
        while True:  # each service tries the store again a few seconds after it failed
            try:
                _send(node, "bob@example.test", f"after via {node.node_name}")
                break
            except smtplib.SMTPRecipientsRefused:
                assert time.monotonic() < deadline, "the store's return went unnoticed"
                time.sleep(1)
    for node in nodes:
        # bob was made after the outage: he logs in once the agent has moved Dovecot back
        # onto the store.
        seen = _wait_for_subjects(node, "bob@example.test", "bob password",
                                  {f"after via {node.node_name}"})
        assert seen == [f"after via {node.node_name}"]
        # what was accepted during the outage is still there, once
        assert _subjects_over_imap(node, "ann@example.test", "ann password") == [
            f"outage via {node.node_name}"]


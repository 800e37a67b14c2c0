"""Mail across three nodes on one real PostgreSQL store: logins, catching up, a shared root.

Each node has its own home and port base and runs, under its own supervisor, only the services
a test needs (real Dovecot, smtp, send, panel). Every test stops every node it started, passed
or failed. The "shared filesystem" of a real cluster is one directory of this machine that
every node is given as its mail root (setting mail.root, cascaded).
"""

from __future__ import annotations

import imaplib
import os
import shutil
import smtplib
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.conftest import free_port_base

from mailyard.cluster.changes import apply_pending, changes_report
from mailyard.cluster.membership import init_manager, join, list_nodes, make_token
from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.queue import admin as queue_admin
from mailyard.services import control
from mailyard.services.apply_settings import change_settings
from mailyard.store.accounts import add_domain, add_mailbox

ALL_SERVICES = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd",
                "clamd", "freshclam", "panel")
DOMAIN = "example.test"
FRED = f"fred@{DOMAIN}"
PASSWORD = "fred's password 1"
# Generous bounds on a loaded two-core machine; the tests poll and never assert on time.
UP_SECONDS = 120
WAIT_SECONDS = 120
CLIENT_TIMEOUT = 60


@dataclass
class MailCluster:
    base: Path
    manager: Home
    members: list[Home]

    @property
    def nodes(self) -> list[Home]:
        return [self.manager, *self.members]


@pytest.fixture
def mail_cluster(pg_url: str) -> Iterator[MailCluster]:
    """alpha (the manager), beta and gamma on one fresh PostgreSQL database; none started.
    Every node is stopped at the end, whatever the test left running."""
    base = Path(tempfile.mkdtemp(prefix="mailyard-cmail-", dir="/tmp"))
    os.chmod(base, 0o711)  # the services drop to the mail owner, who must reach the homes
    homes = []
    try:
        for name in ("alpha", "beta", "gamma"):
            home, _ = init_home(base / name, "mx.example.test", port_base=free_port_base(),
                                db_url=pg_url, node_name=name)
            homes.append(home)
        manager, *members = homes
        init_manager(manager, f"https://127.0.0.1:{manager.port('panel')}")
        token = make_token(manager)
        for member in members:
            join(member, f"https://127.0.0.1:{manager.port('panel')}", token,
                 f"https://127.0.0.1:{member.port('panel')}")
        yield MailCluster(base, manager, members)
    finally:
        for home in homes:
            control.down(home)
        shutil.rmtree(base, ignore_errors=True)


def run_only(node: Home, wanted: tuple[str, ...]) -> None:
    """Start `node` with just `wanted` (its own start-on-boot values) and wait until they
    serve."""
    change_settings(node, {f"service.{name}.start_on_boot": name in wanted
                           for name in ALL_SERVICES}, apply=False)
    control.up(node, timeout=UP_SECONDS)


def tls_to(node: Home) -> ssl.SSLContext:
    """A client context trusting only the node's own self-signed certificate (its name is
    mx.example.test; clients connect to 127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(node.cert_file))
    context.check_hostname = False
    return context


def imap_login(node: Home, address: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", node.port("imap"), timeout=CLIENT_TIMEOUT)
    client.starttls(tls_to(node))
    client.login(address, password)
    return client


def greeting(node: Home) -> bytes:
    client = smtplib.SMTP(timeout=CLIENT_TIMEOUT)
    _, text = client.connect("127.0.0.1", node.port("smtp"))
    client.quit()
    return text


def state_of(cluster: MailCluster, change_id: int, node: Home) -> str:
    change = next(c for c in changes_report(cluster.manager) if c["id"] == change_id)
    return next(o["state"] for o in change["nodes"] if o["node"] == node.node_name)


def test_a_mailbox_made_on_the_manager_logs_in_over_imap_on_every_node(
        mail_cluster: MailCluster):
    for node in mail_cluster.nodes:
        run_only(node, ("imap",))
    # Made while every Dovecot runs: nothing is restarted or re-rendered for it.
    add_domain(mail_cluster.manager, DOMAIN)
    add_mailbox(mail_cluster.manager, FRED, PASSWORD)
    for node in mail_cluster.nodes:
        client = imap_login(node, FRED, PASSWORD)
        try:
            status, data = client.select("INBOX")
            assert status == "OK", (node.node_name, data)
        finally:
            client.logout()
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(mail_cluster.members[1], FRED, "not fred's password")


def test_a_node_stopped_during_a_cascaded_change_applies_it_when_it_starts_again(
        mail_cluster: MailCluster):
    """gamma runs smtp and its panel (whose cluster agent applies cascades); it is stopped,
    the manager cascades a new greeting, and when gamma is up again its agent applies the
    change and SMTP clients of gamma see the new greeting."""
    gamma = mail_cluster.members[1]
    run_only(gamma, ("smtp", "panel"))
    assert b"greetings from the yard" not in greeting(gamma)
    control.down(gamma)
    assert not control.supervisor_running(gamma)
    with pytest.raises(OSError):  # really down: nothing answers on its SMTP port
        socket.create_connection(("127.0.0.1", gamma.port("smtp")), timeout=CLIENT_TIMEOUT)

    result = change_settings(mail_cluster.manager, {"smtp.greeting": "greetings from the yard"},
                             cascade=True)
    (change_id,) = result.change_ids
    assert state_of(mail_cluster, change_id, gamma) == "pending"

    control.up(gamma, timeout=UP_SECONDS)
    deadline = time.monotonic() + WAIT_SECONDS
    while (state := state_of(mail_cluster, change_id, gamma)) != "applied":
        assert state != "failed", changes_report(mail_cluster.manager)[0]["nodes"]
        assert time.monotonic() < deadline, "gamma's agent never applied the pending change"
        time.sleep(0.2)
    while b"greetings from the yard" not in (seen := greeting(gamma)):
        assert time.monotonic() < deadline, f"gamma still greets with {seen!r}"
        time.sleep(0.3)
    row = next(r for r in list_nodes(gamma) if r["name"] == "gamma")
    assert row["reachable"]


def _message(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.net", FRED, subject
    msg.set_content(f"body of {subject}\n")
    return msg


def _find(node: Home, subject: str) -> bytes | None:
    """The message with `subject` in fred's INBOX as `node`'s Dovecot serves it, or None."""
    client = imap_login(node, FRED, PASSWORD)
    try:
        client.select("INBOX")
        _, found = client.search(None, "SUBJECT", f'"{subject}"')
        if not found[0]:
            return None
        _, data = client.fetch(found[0].split()[0], "(RFC822)")
        return bytes(data[0][1])
    finally:
        client.logout()


def test_mail_accepted_by_one_node_is_read_over_imap_on_another_from_the_shared_root(
        mail_cluster: MailCluster):
    """beta accepts (smtp) and delivers (send); gamma serves IMAP. The mail root is cascaded
    from the manager while both run, and each node applies it as its agent does."""
    beta, gamma = mail_cluster.members
    shared = mail_cluster.base / "shared-mail"  # does not exist yet: the change creates it
    run_only(beta, ("smtp", "send"))
    run_only(gamma, ("imap",))

    result = change_settings(mail_cluster.manager, {"mail.root": str(shared)}, cascade=True)
    assert result.problems == [] and shared.is_dir()
    (change_id,) = result.change_ids
    assert "send" in apply_pending(beta).reloaded  # what each node's agent does on NOTIFY
    assert "imap" in apply_pending(gamma).reloaded
    assert {state_of(mail_cluster, change_id, n) for n in (beta, gamma)} == {"applied"}

    add_domain(mail_cluster.manager, DOMAIN)
    add_mailbox(mail_cluster.manager, FRED, PASSWORD)
    assert (shared / DOMAIN / "fred" / "Maildir" / "new").is_dir()

    subject = "accepted by beta, read on gamma"
    with smtplib.SMTP("127.0.0.1", beta.port("smtp"), timeout=CLIENT_TIMEOUT) as smtp:
        smtp.ehlo("client.example.net")
        smtp.send_message(_message(subject))
    deadline = time.monotonic() + WAIT_SECONDS
    while (raw := _find(gamma, subject)) is None:
        assert time.monotonic() < deadline, (f"gamma never showed the message; beta's queue: "
                                             f"{queue_admin.stats(beta)}")
        time.sleep(0.5)
    assert b"Delivered-To: " + FRED.encode() in raw
    assert f"body of {subject}".encode() in raw
    # One copy, in the shared root; none in the nodes' own homes.
    copies = [p for sub in ("new", "cur")
              for p in (shared / DOMAIN / "fred" / "Maildir" / sub).iterdir()]
    assert len(copies) == 1
    for node in mail_cluster.nodes:
        assert not (node.root / "mail" / DOMAIN / "fred").exists(), node.node_name

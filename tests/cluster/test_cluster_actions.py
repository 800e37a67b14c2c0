"""Cascaded actions on three running nodes that share a real PostgreSQL store.

Each node runs its panel (the API the manager calls, at https://127.0.0.1:PANELPORT, the address
it joined with) and the send service (the one the tests stop, start and ask to process or purge
the queue); nothing else, to keep the module quick. The nodes are started once for the module
and the tests run in order, each leaving every service running.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from tests.conftest import free_port_base

from mailyard.cluster import manager_token
from mailyard.cluster.actions import Action, Target, call_node, run_everywhere, targets
from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.panel.tokens import create_token
from mailyard.queue import Envelope, Queue
from mailyard.services import control
from mailyard.services.apply_settings import change_settings
from mailyard.services.tls import make_self_signed

MAILYARD = str(Path(sys.executable).parent / "mailyard")
ALL_SERVICES = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd",
                "clamd", "freshclam", "panel")
RUNNING = ("send", "panel")
# Generous: three nodes start on a loaded two-core machine; nothing here measures speed.
UP_SECONDS = 120
CLI_SECONDS = 300


@dataclass
class Cluster:
    alpha: Home  # the manager
    beta: Home
    gamma: Home

    @property
    def nodes(self) -> list[Home]:
        return [self.alpha, self.beta, self.gamma]


def cli(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILYARD_HOME=str(home.root))
    return subprocess.run([MAILYARD, *args], env=env, capture_output=True, text=True,
                          timeout=CLI_SECONDS)


def address(home: Home) -> str:
    return f"https://127.0.0.1:{home.port('panel')}"


def state(home: Home, service: str) -> str:
    """The service's state as the node's own supervisor says."""
    return next(s.state for s in control.status(home, with_versions=False)
                if s.name == service)


def lines_by_node(stdout: str) -> dict[str, str]:
    """`alpha  done  send: STOPPED` lines of a --cascade command, by node."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def cluster(postgres_server: dict[str, object]) -> Iterator[Cluster]:
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"host=127.0.0.1 port={postgres_server['port']} user=mailyard "
                         "dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"postgresql://mailyard@127.0.0.1:{postgres_server['port']}/{name}"
    base = Path(tempfile.mkdtemp(prefix="mailyard-cascade-", dir="/tmp"))
    os.chmod(base, 0o711)
    homes = [init_home(base / n, "mx.example.test", port_base=free_port_base(), db_url=db_url,
                       node_name=n)[0] for n in ("alpha", "beta", "gamma")]
    nodes = Cluster(*homes)
    try:
        done = cli(nodes.alpha, "cluster", "init", "--address", address(nodes.alpha))
        assert done.returncode == 0, done.stderr
        token = cli(nodes.alpha, "cluster", "token").stdout.strip()
        for member in (nodes.beta, nodes.gamma):
            joined = cli(member, "cluster", "join", address(nodes.alpha), "--token", token,
                         "--address", address(member))
            assert joined.returncode == 0, joined.stderr
        for home in nodes.nodes:
            change_settings(home, {f"service.{s}.start_on_boot": s in RUNNING
                                   for s in ALL_SERVICES}, apply=False)
            control.up(home, timeout=UP_SECONDS)
        yield nodes
    finally:
        for home in homes:
            control.down(home)
        shutil.rmtree(base, ignore_errors=True)


def test_every_node_recorded_its_certificate_and_the_manager_has_a_node_token(cluster):
    for target in targets(cluster.alpha):
        home = getattr(cluster, target.name)
        assert target.address == address(home)
        assert target.cert_pem == home.cert_file.read_text()
    path = manager_token.token_path(cluster.alpha)
    # root's, readable by the panel's group only (the panel sends it), as root
    st = path.stat()
    assert st.st_mode & 0o777 == (0o640 if os.geteuid() == 0 else 0o600)
    if os.geteuid() == 0:
        assert st.st_uid == 0 and grp.getgrgid(st.st_gid).gr_name == "mailyard-panel"
    assert manager_token.read(cluster.alpha).startswith("myd_")


def test_a_cascaded_stop_and_start_reach_every_nodes_supervisor(cluster):
    stopped = cli(cluster.alpha, "service", "stop", "send", "--cascade")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    lines = lines_by_node(stopped.stdout)
    assert set(lines) == {"alpha", "beta", "gamma"}
    assert all("done" in line and "send: STOPPED" in line for line in lines.values()), lines
    for home in cluster.nodes:
        assert state(home, "send") == "STOPPED", home.node_name
        assert state(home, "panel") == "RUNNING", home.node_name
    started = cli(cluster.alpha, "service", "start", "send", "--cascade")
    assert started.returncode == 0, started.stdout + started.stderr
    assert all("send: RUNNING" in line for line in lines_by_node(started.stdout).values())
    for home in cluster.nodes:
        assert state(home, "send") == "RUNNING", home.node_name


def test_a_cascaded_purge_removes_queued_mail_on_every_node(cluster):
    run_everywhere(cluster.alpha, Action("service.stop", "send"))  # so the mail stays queued
    try:
        for home in cluster.nodes:
            with Queue(home.queue_dir).open_message() as writer:
                writer.write(b"Subject: waiting on " + home.node_name.encode() + b"\n\nhi\n")
                writer.commit(Envelope(sender="ann@example.test",
                                       recipients=["bob@elsewhere.example"]))
            assert sum(Queue(home.queue_dir).counts().values()) == 1
        purged = cli(cluster.alpha, "queue", "purge", "all", "--cascade", "--yes")
        assert purged.returncode == 0, purged.stdout + purged.stderr
        lines = lines_by_node(purged.stdout)
        assert all("done" in line and "all: 1 messages" in line for line in lines.values()), \
            lines
        for home in cluster.nodes:
            assert Queue(home.queue_dir).counts() == {"todo": 0, "local": 0, "remote": 0}
    finally:
        run_everywhere(cluster.alpha, Action("service.start", "send"))


def test_the_managers_api_cascades_and_reports_each_node(cluster):
    token = create_token(cluster.alpha, "cascade-test")
    with httpx.Client(base_url=address(cluster.alpha), verify=False, timeout=CLI_SECONDS,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        listed = api.get("/api/v1/cluster/nodes")
        assert listed.status_code == 200
        assert [n["name"] for n in listed.json()] == ["alpha", "beta", "gamma"]
        answer = api.post("/api/v1/cluster/actions", json={"action": "queue.process"})
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["ok"] is True and report["action"] == "queue process", report
        assert [(o["node"], o["state"]) for o in report["outcomes"]] == [
            ("alpha", "done"), ("beta", "done"), ("gamma", "done")]
        assert api.get("/api/v1/cluster/changes").status_code == 200
    # The store is shared, so the same token is good on a member; a member does not cascade.
    with httpx.Client(base_url=address(cluster.beta), verify=False, timeout=CLI_SECONDS,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        refused = api.post("/api/v1/cluster/actions", json={"action": "queue.process"})
        assert refused.status_code == 409
        assert "beta is a member" in refused.json()["detail"]


def test_a_wrong_node_token_is_refused_by_every_other_node(cluster):
    outcomes = {o.node: o for o in run_everywhere(cluster.alpha, Action("queue.process"),
                                                  token="myd_" + "x" * 43)}
    assert outcomes["alpha"].state == "done"  # the manager's own part needs no token
    for name in ("beta", "gamma"):
        assert outcomes[name].state == "failed"
        assert "HTTP 401" in outcomes[name].detail


def test_a_certificate_other_than_the_pinned_one_is_refused(cluster, tmp_path):
    """beta's panel presents beta's certificate; pinned to another one, the call is refused
    before any request (or the token) is sent."""
    (tmp_path / "other").mkdir()
    make_self_signed(tmp_path / "other" / "cert.pem", tmp_path / "other" / "key.pem",
                     "mx.example.test")  # same name, other key: only the pin tells them apart
    other = (tmp_path / "other" / "cert.pem").read_text()
    action, token = Action("queue.process"), manager_token.read(cluster.alpha)
    refused = call_node(Target("beta", address(cluster.beta), other, False), action, token)
    assert refused.state == "unreachable"
    assert "not the one it recorded" in refused.detail
    pinned = cluster.beta.cert_file.read_text()
    assert call_node(Target("beta", address(cluster.beta), pinned, False), action,
                     token).state == "done"


def test_only_the_manager_cascades_and_only_with_its_node_token(cluster):
    member = cli(cluster.beta, "queue", "process", "--cascade")
    assert member.returncode == 2
    assert "beta is a member" in member.stderr and "alpha" in member.stderr
    path = manager_token.token_path(cluster.alpha)
    aside = path.with_name("aside")
    path.rename(aside)
    try:
        missing = cli(cluster.alpha, "queue", "process", "--cascade")
        assert missing.returncode == 2
        assert "mailyard cluster init" in missing.stderr
    finally:
        aside.rename(path)


def test_a_node_whose_panel_is_down_is_reported_unreachable(cluster):
    control.stop(cluster.gamma, "panel")
    try:
        result = cli(cluster.alpha, "queue", "process", "--cascade")
        assert result.returncode == 1, result.stdout + result.stderr
        lines = lines_by_node(result.stdout)
        assert "done" in lines["alpha"] and "done" in lines["beta"]
        assert "unreachable" in lines["gamma"] and "refused" in lines["gamma"].lower()
        assert "not done on 1 of 3 nodes (gamma)" in result.stderr
    finally:
        control.start(cluster.gamma, "panel")


# ---- the panel: the Cluster page and "Cascade to nodes?" in a real browser -------------------

ADMIN, PASSWORD = "clusteradmin", "cluster admin password"
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def page(cluster: Cluster) -> Iterator[object]:
    """Debian's Chromium, headless, signed in to the manager's panel."""
    from playwright.sync_api import sync_playwright

    from mailyard.store import accounts

    accounts.add_admin(cluster.alpha, ADMIN, PASSWORD)  # the store is shared: every node's too
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            context = browser.new_context(ignore_https_errors=True,
                                          viewport={"width": 1400, "height": 900})
            context.set_default_timeout(WAIT_MS)
            tab = context.new_page()
            tab.on("dialog", lambda dialog: dialog.accept())
            tab.goto(address(cluster.alpha) + "/signin")
            tab.fill("#username", ADMIN)
            tab.fill("#password", PASSWORD)
            tab.click("button[type=submit]")
            tab.wait_for_url("**/mta")
            yield tab
        finally:
            browser.close()


def test_the_cluster_page_shows_every_node_and_its_services(cluster, page):
    from playwright.sync_api import expect

    page.goto(address(cluster.alpha) + "/cluster")
    expect(page.locator("h1")).to_have_text("Mail Server Management :: Cluster")
    expect(page.locator("table.nodes tbody tr")).to_have_count(3)
    for home in cluster.nodes:
        row = page.locator(f'tr[data-node="{home.node_name}"]')
        expect(row).to_contain_text(address(home))
    # What gamma last reported: its panel's agent reports every 15 s; the first report may
    # have been made while send was still starting.
    deadline = time.monotonic() + 60
    while page.locator('[data-service-state="gamma/send"]').inner_text().strip() != "RUNNING":
        assert time.monotonic() < deadline, "gamma never reported send running"
        time.sleep(2)
        page.reload()


def test_cascade_to_nodes_in_the_panel_stops_and_starts_send_everywhere(cluster, page):
    from playwright.sync_api import expect

    service = '#smtp-primary [data-service="send"]'
    for verb, expected in (("stop", "STOPPED"), ("start", "RUNNING")):
        page.goto(address(cluster.alpha) + "/mta")
        page.check(f"{service} input.cascade-actions")
        page.click(f"{service} button.{verb}")
        flash = page.locator("#flash")
        expect(flash).to_contain_text(f"Cascaded service {verb} send: done on every node.",
                                      timeout=WAIT_MS)
        expect(flash.locator("li")).to_have_count(3)
        expect(flash.locator("li").nth(2)).to_contain_text("gamma: done")
        for home in cluster.nodes:
            assert state(home, "send") == expected, (verb, home.node_name)


def test_a_cascaded_purge_from_the_queue_page_shows_a_node_that_is_down(cluster, page):
    from playwright.sync_api import expect

    control.stop(cluster.gamma, "panel")
    try:
        page.goto(address(cluster.alpha) + "/queue")
        page.check("#purge-todo")
        page.check("#quick-stats input.cascade-actions")
        page.click('button[form="purge"]')
        flash = page.locator("#flash")
        expect(flash).to_contain_text("Cascaded queue purge todo: not done on every node.",
                                      timeout=WAIT_MS)
        expect(flash).to_have_class("flash bad")
        expect(flash.locator("li").nth(2)).to_contain_text("gamma: unreachable")
    finally:
        control.start(cluster.gamma, "panel")


def test_a_member_offers_no_cascade(cluster, page):
    from playwright.sync_api import expect

    page.goto(address(cluster.beta) + "/signin")
    page.fill("#username", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/mta")
    expect(page.locator('[data-service="send"] button.stop').first).to_be_visible()
    expect(page.locator("input.cascade-actions")).to_have_count(0)
    page.goto(address(cluster.beta) + "/queue")
    expect(page.locator("input.cascade-actions")).to_have_count(0)

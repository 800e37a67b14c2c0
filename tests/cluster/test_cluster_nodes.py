"""Three nodes on one machine share a real PostgreSQL store: membership, scope, cascades.

Each node has its own home and port base; they share only the store, as a real cluster does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import free_port_base

from mailyard.cluster.agent import run_once, start_thread
from mailyard.cluster.changes import changes_report, pending_changes
from mailyard.cluster.membership import ClusterError, join, list_nodes
from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.services.apply_settings import change_settings
from mailyard.store.settings_store import load_settings

MAILYARD = str(Path(sys.executable).parent / "mailyard")
# Generous bound for a NOTIFY to reach a listening node and be applied (it takes well under a
# second); the test polls and never asserts on the time taken.
APPLY_WAIT_SECONDS = 60


@dataclass
class Cluster:
    manager: Home
    members: list[Home]

    @property
    def nodes(self) -> list[Home]:
        return [self.manager, *self.members]


def cli(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILYARD_HOME=str(home.root))
    return subprocess.run([MAILYARD, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def cluster(pg_url: str, request: pytest.FixtureRequest) -> Cluster:
    base = Path(tempfile.mkdtemp(prefix="mailyard-cluster-", dir="/tmp"))
    os.chmod(base, 0o711)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    homes = []
    for name in ("alpha", "beta", "gamma"):
        home, _ = init_home(base / name, "mx.example.test", port_base=free_port_base(),
                            db_url=pg_url, node_name=name)
        homes.append(home)
    manager, *members = homes
    done = cli(manager, "cluster", "init", "--address", "https://alpha.example.test:2443")
    assert done.returncode == 0, done.stderr
    token = cli(manager, "cluster", "token")
    assert token.returncode == 0, token.stderr
    for member in members:
        joined = cli(member, "cluster", "join", "https://alpha.example.test:2443",
                     "--token", token.stdout.strip(),
                     "--address", f"https://{member.node_name}.example.test:2443")
        assert joined.returncode == 0, joined.stderr
        assert "joined" in joined.stdout
    return Cluster(manager, members)


def test_cluster_nodes_lists_every_node_with_role_address_and_version(cluster: Cluster):
    out = cli(cluster.members[0], "cluster", "nodes", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"alpha", "beta", "gamma"}
    assert rows["alpha"]["role"] == "manager"
    assert rows["beta"]["role"] == rows["gamma"]["role"] == "member"
    assert rows["gamma"]["address"] == "https://gamma.example.test:2443"
    assert all(r["version"] and r["reachable"] for r in rows.values())
    table = cli(cluster.manager, "cluster", "nodes")
    assert table.returncode == 0 and "gamma.example.test" in table.stdout


def test_a_heartbeat_reports_each_services_state(cluster: Cluster):
    beta = cluster.members[0]
    run_once(beta)
    row = next(r for r in list_nodes(beta) if r["name"] == "beta")
    assert row["services"]["smtp"] == "STOPPED"  # the node is not started
    assert row["seconds_since_seen"] is not None and row["reachable"]


def test_a_wrong_token_does_not_join_and_tokens_are_made_on_the_manager(cluster: Cluster):
    beta = cluster.members[0]
    with pytest.raises(ClusterError, match="unknown or expired"):
        join(beta, "https://alpha.example.test:2443", "myc1-not-a-token")
    refused = cli(beta, "cluster", "token")
    assert refused.returncode == 2 and "not the manager" in refused.stderr


def test_a_cascaded_setting_is_what_every_node_loads(cluster: Cluster):
    beta, gamma = cluster.members
    change_settings(gamma, {"smtp.greeting": "gamma's own"})
    done = cli(cluster.manager, "settings", "set", "smtp.greeting", "one yard", "--cascade")
    assert done.returncode == 0, done.stderr
    for node in cluster.nodes:
        assert load_settings(node)["smtp.greeting"] == "one yard", node.node_name


def test_a_change_without_cascade_stays_on_its_node(cluster: Cluster):
    beta, gamma = cluster.members
    before = load_settings(cluster.manager)["smtp.timeout"]
    done = cli(beta, "settings", "set", "smtp.timeout", "321")
    assert done.returncode == 0, done.stderr
    assert load_settings(beta)["smtp.timeout"] == 321
    assert load_settings(cluster.manager)["smtp.timeout"] == before
    assert load_settings(gamma)["smtp.timeout"] == before
    assert changes_report(beta) == []  # nothing for the other nodes to apply


def _state(node: Home, change_id: int, name: str) -> str:
    change = next(c for c in changes_report(node) if c["id"] == change_id)
    return next(o["state"] for o in change["nodes"] if o["node"] == name)


def test_a_listening_node_applies_a_cascaded_change_when_notified(cluster: Cluster):
    beta = cluster.members[0]
    # The agent LISTENs, then reports once; after that report only a NOTIFY wakes it (its
    # next heartbeat is an hour away), so an applied mark can only come from the NOTIFY path.
    first_seen = next(r for r in list_nodes(beta) if r["name"] == "beta")["last_seen"]
    thread, stop = start_thread(beta, heartbeat=3600)
    try:
        deadline = time.monotonic() + APPLY_WAIT_SECONDS
        while next(r for r in list_nodes(beta)
                   if r["name"] == "beta")["last_seen"] == first_seen:
            assert time.monotonic() < deadline, "the agent never reported"
            time.sleep(0.1)
        result = change_settings(cluster.manager, {"smtp.max_connections": "42"},
                                 cascade=True)
        (change_id,) = result.change_ids
        assert _state(cluster.manager, change_id, "alpha") == "applied"
        while _state(cluster.manager, change_id, "beta") != "applied":
            assert time.monotonic() < deadline, "beta never applied the cascaded change"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert _state(cluster.manager, change_id, "gamma") == "pending"  # its agent is not running


def test_a_node_that_was_down_applies_pending_changes_when_it_starts(cluster: Cluster):
    gamma = cluster.members[1]
    result = change_settings(cluster.manager, {"smtp.rbl_zones": "bl.example.test"},
                             cascade=True)
    (change_id,) = result.change_ids
    assert [c.id for c in pending_changes(gamma)] == [change_id]
    run_once(gamma)  # what the agent does first when the node's panel starts
    assert pending_changes(gamma) == []
    assert _state(cluster.manager, change_id, "gamma") == "applied"
    report = cli(cluster.manager, "cluster", "changes")
    assert report.returncode == 0, report.stderr
    assert f"#{change_id} smtp.rbl_zones = bl.example.test" in report.stdout
    assert "gamma: applied" in report.stdout and "beta: pending" in report.stdout


def test_a_node_that_joins_later_owes_nothing_for_older_changes(cluster: Cluster, pg_url: str):
    change_settings(cluster.manager, {"smtp.greeting": "before delta"}, cascade=True)
    base = cluster.manager.root.parent
    delta, _ = init_home(base / "delta", "mx.example.test", port_base=free_port_base(),
                         db_url=pg_url, node_name="delta")
    token = cli(cluster.manager, "cluster", "token").stdout.strip()
    _, warning = join(delta, "https://elsewhere.example.test", token)
    assert "alpha" in warning  # the store decides which cluster; the URL is only compared
    assert pending_changes(delta) == []
    assert load_settings(delta)["smtp.greeting"] == "before delta"


def test_a_cascaded_greeting_reaches_smtp_clients_of_a_running_member(cluster: Cluster):
    """gamma runs smtp and its panel (whose cluster agent listens); a greeting cascaded from
    the manager is applied there (smtp reloaded) and is what an SMTP client sees."""
    import smtplib

    from mailyard.services import control

    gamma = cluster.members[1]
    services = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd",
                "clamd", "freshclam", "panel")
    change_settings(gamma, {f"service.{name}.start_on_boot": name in ("smtp", "panel")
                            for name in services}, apply=False)  # gamma's own values
    try:
        control.up(gamma, timeout=90)
        deadline = time.monotonic() + APPLY_WAIT_SECONDS
        while "RUNNING" != next(r for r in list_nodes(gamma)
                                if r["name"] == "gamma")["services"].get("panel"):
            assert time.monotonic() < deadline, "gamma's agent never reported its panel"
            time.sleep(0.2)
        result = change_settings(cluster.manager, {"smtp.greeting": "hello from the yard"},
                                 cascade=True)
        (change_id,) = result.change_ids
        while _state(cluster.manager, change_id, "gamma") != "applied":
            assert _state(cluster.manager, change_id, "gamma") != "failed", \
                changes_report(cluster.manager)[0]["nodes"]
            assert time.monotonic() < deadline, "gamma never applied the cascaded greeting"
            time.sleep(0.2)
        while True:
            client = smtplib.SMTP(timeout=30)
            _, greeting = client.connect("127.0.0.1", gamma.port("smtp"))
            client.quit()
            if b"hello from the yard" in greeting:
                break
            assert time.monotonic() < deadline, f"gamma still greets with {greeting!r}"
            time.sleep(0.3)
    finally:
        control.down(gamma)

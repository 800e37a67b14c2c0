"""The policy of cascaded actions without a network: which request each action makes, what
counts as done, how a node that cannot be called reads, the pinned certificate, the node token."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from mailyard.cluster import manager_token
from mailyard.cluster.actions import (
    DONE,
    FAILED,
    UNREACHABLE,
    Action,
    ActionError,
    NodeOutcome,
    Target,
    all_done,
    call_node,
    cannot_call,
    judge,
    require_manager,
    unreachable_reason,
)
from mailyard.cluster.membership import ClusterError
from mailyard.cluster.trust import TrustError, leaf_certificate, pinned_context
from mailyard.home import Home
from mailyard.panel.tokens import verify_token
from mailyard.services.privileges import panel_owner
from mailyard.services.tls import make_self_signed

# ---- actions and the request each makes ------------------------------------------------------


def test_each_action_calls_the_nodes_own_api_endpoint():
    assert Action("service.stop", "send").request() == ("/api/v1/services/send/stop", None)
    assert Action("service.restart", "imap").request() == ("/api/v1/services/imap/restart",
                                                           None)
    assert Action("queue.process").request() == ("/api/v1/queue/process", None)
    assert Action("queue.purge", queues=("remote", "todo")).request() == (
        "/api/v1/queue/purge", {"queues": ["remote", "todo"]})


def test_a_purge_of_all_queues_is_one_purge_and_each_queue_counts_once():
    assert Action("queue.purge", queues=("local", "all")).queues == ("all",)
    assert Action("queue.purge", queues=("local", "local", "todo")).queues == ("local", "todo")
    assert Action("queue.purge", queues=("remote",)).label == "queue purge remote"


@pytest.mark.parametrize("kind, service, queues, field", [
    ("service.reload", "smtp", (), "action"),
    ("service.stop", "", (), "service"),
    ("service.stop", "nosuch", (), "service"),
    ("queue.process", "send", (), "service"),
    ("queue.process", "", ("all",), "queues"),
    ("queue.purge", "", (), "queues"),
    ("queue.purge", "", ("everything",), "queues"),
])
def test_an_action_that_cannot_be_cascaded_names_the_field(kind, service, queues, field):
    with pytest.raises(ActionError) as refused:
        Action(kind, service, queues)
    assert refused.value.field == field


def test_the_panel_is_not_cascaded_because_it_carries_the_cascade():
    for verb in ("start", "stop", "restart"):
        with pytest.raises(ActionError, match="carries cascaded actions"):
            Action(f"service.{verb}", "panel")


# ---- what counts as done ---------------------------------------------------------------------


def test_a_service_is_done_only_in_the_state_its_action_asks_for():
    stop, start = Action("service.stop", "send"), Action("service.start", "send")
    assert judge(stop, 200, {"name": "send", "state": "STOPPED"}) == (DONE, "send: STOPPED")
    assert judge(start, 200, {"name": "send", "state": "RUNNING"}) == (DONE, "send: RUNNING")
    assert judge(start, 200, {"name": "send", "state": "STARTING"})[0] == DONE
    state, detail = judge(start, 200, {"name": "send", "state": "FATAL"})
    assert state == FAILED and "FATAL" in detail


def test_a_refusal_by_the_node_is_failed_with_its_reason():
    state, detail = judge(Action("service.start", "smtp"), 409,
                          {"detail": "the node is not running; start it with `mailyard up`"})
    assert state == FAILED and detail.startswith("HTTP 409: the node is not running")
    state, detail = judge(Action("queue.process"), 401, {"detail": "the bearer token is not "
                                                                   "valid"})
    assert state == FAILED and "cluster init" in detail
    assert judge(Action("queue.process"), 502, None) == (FAILED, "HTTP 502: no reason given")


def test_queue_actions_are_done_when_the_node_confirms_them():
    process = Action("queue.process")
    assert judge(process, 200, {"result": {"waiting": 3, "done": True}})[0] == DONE
    assert judge(process, 200, {"result": {"waiting": 3, "done": False}})[0] == FAILED
    purge = Action("queue.purge", queues=("remote", "local"))
    confirmed = {"result": {"remote": {"messages": 2, "done": True},
                            "local": {"messages": 0, "done": True}}}
    assert judge(purge, 200, confirmed) == (DONE, "purged remote: 2 messages; local: 0 "
                                                  "messages")
    half = {"result": {"remote": {"messages": 2, "done": True},
                       "local": {"messages": 1, "done": False}}}
    state, detail = judge(purge, 200, half)
    assert state == FAILED and "local" in detail


def test_all_done_means_every_node_and_at_least_one():
    done = NodeOutcome("a", "https://a", DONE, "")
    assert all_done([done, done])
    assert not all_done([done, NodeOutcome("b", "https://b", UNREACHABLE, "down")])
    assert not all_done([])


# ---- nodes that cannot be called -----------------------------------------------------------


def _pem(tmp: Path, name: str = "node") -> str:
    (tmp / name).mkdir()
    make_self_signed(tmp / name / "cert.pem", tmp / name / "key.pem", f"{name}.example.test")
    return (tmp / name / "cert.pem").read_text()


def test_a_node_without_address_tls_address_or_certificate_is_unreachable(tmp_path: Path):
    pem = _pem(tmp_path)
    assert cannot_call(Target("b", "https://b.example.test:2443", pem, False)) is None
    assert "no address" in cannot_call(Target("b", "", pem, False))
    assert "not https" in cannot_call(Target("b", "http://b.example.test", pem, False))
    assert "no TLS certificate" in cannot_call(Target("b", "https://b.example.test", "", False))
    outcome = call_node(Target("b", "http://b.example.test", pem, False),
                        Action("queue.process"), "myd_token")
    assert outcome.state == UNREACHABLE and "not https" in outcome.detail


def test_unreachable_reasons_read_as_what_happened():
    assert "10 s" in unreachable_reason(httpx.ConnectTimeout("timed out"))
    assert "may still finish" in unreachable_reason(httpx.ReadTimeout("timed out"))
    tls = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert "not the one it recorded" in unreachable_reason(tls)
    assert "Connection refused" in unreachable_reason(
        httpx.ConnectError("[Errno 111] Connection refused"))


# ---- the pinned certificate ------------------------------------------------------------------


def test_only_the_nodes_own_certificate_is_pinned_not_its_chain(tmp_path: Path):
    leaf, chain = _pem(tmp_path, "leaf"), _pem(tmp_path, "ca")
    assert leaf_certificate(leaf + chain) == leaf_certificate(leaf)
    assert "ca.example.test" not in leaf_certificate(leaf + chain)
    context = pinned_context(leaf + chain)
    assert len(context.get_ca_certs()) == 1
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "leaf.example.test"),),)
    assert context.verify_mode.name == "CERT_REQUIRED"


def test_no_certificate_no_context():
    with pytest.raises(TrustError):
        pinned_context("")
    with pytest.raises(TrustError):
        pinned_context("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n"
                       "-----END CERTIFICATE-----\n")


# ---- the manager's node token ----------------------------------------------------------------


def test_the_node_token_is_kept_for_root_and_the_panel_only_and_renewed_each_time(home: Home):
    path = manager_token.renew(home)
    first = manager_token.read(home)
    # root's, readable by the panel's group (the panel sends it), by no one else
    assert stat.S_IMODE(os.stat(path).st_mode) == manager_token.TOKEN_MODE == 0o640
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == manager_token.TOKEN_DIR_MODE == 0o750
    if os.geteuid() == 0:
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (0, panel_owner()[1])
    assert verify_token(home, first) == manager_token.TOKEN_NAME
    manager_token.renew(home)
    second = manager_token.read(home)
    assert second != first
    assert verify_token(home, first) is None  # the old one is revoked
    assert verify_token(home, second) == manager_token.TOKEN_NAME
    assert not list(path.parent.glob("*.tmp"))


def test_without_the_token_file_the_cascade_says_to_run_cluster_init(home: Home):
    with pytest.raises(ClusterError, match="mailyard cluster init"):
        manager_token.read(home)


def test_a_node_outside_a_cluster_does_not_cascade(home: Home):
    with pytest.raises(ClusterError, match="not in a cluster"):
        require_manager(home)

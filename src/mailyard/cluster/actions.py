"""Cascaded actions: a service or queue action run on every node of the cluster, from the manager.

The manager runs the action itself with the functions its CLI and API use, and calls every
other node's own API (the same endpoint an administrator would call there) over HTTPS, trusting
only the certificate the node recorded (mailyard.cluster.trust) and sending the manager's node
token (mailyard.cluster.manager_token). Calls run in parallel; each node ends in one state:

    done         the node did it, and the service is in the state the action asks for
    failed       the node answered and refused or could not do it (the node's reason)
    unreachable  no answer: refused connection, timeout, a certificate that is not the pinned
                 one, or nothing recorded to reach the node with

Nothing is skipped: every node in the `nodes` table gets an outcome, a node that is down too.
The policy (which request, what counts as done, how a failure reads) is in pure functions
below, so it is tested without a network.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..queue import QueueError
from ..services import helper
from ..services.errors import ControlError
from ..settings.registry import SERVICE_NAMES
from ..store.db import session_scope
from ..store.models import ClusterNode
from . import manager_token
from .membership import ClusterError, manager
from .trust import TrustError, pinned_context

if TYPE_CHECKING:
    import httpx

    from ..home import Home

# TCP and TLS handshake with a node: a node far away answers in well under a second; 10 s lets
# SYN retransmissions (1 s, then 3 s) happen, without letting a dead address hold the command.
CONNECT_SECONDS = 10.0
# The node's answer: a start waits for supervisord to call the service started, a restart
# first waits for it to stop (up to 15 s), a purge or process waits for the send service
# (up to 15 s per queue). The same bound as `mailyard up` (UP_TIMEOUT_SECONDS).
ANSWER_SECONDS = 120.0
# Nodes called at once. Calls mostly wait on the network; a cluster rarely has more nodes.
MAX_PARALLEL = 16

DONE, FAILED, UNREACHABLE = "done", "failed", "unreachable"
STATES = (DONE, FAILED, UNREACHABLE)

SERVICE_VERBS = ("start", "stop", "restart")
# The state a service must be in after each verb for the node to count as done.
EXPECTED_STATE = {"start": ("RUNNING", "STARTING"), "restart": ("RUNNING", "STARTING"),
                  "stop": ("STOPPED",)}
KINDS = tuple(f"service.{verb}" for verb in SERVICE_VERBS) + ("queue.process", "queue.purge")
PURGE_QUEUES = ("remote", "local", "todo", "all")
# The panel carries the cascade itself: stopping it on the nodes cuts the way back in.
NOT_CASCADED = {"panel": "the panel carries cascaded actions; start, stop or restart it on "
                         "each node with `mailyard service ACTION panel`"}


class ActionError(ValueError):
    """An action that cannot be cascaded as asked: the field, the value and what is allowed."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field}: {value!r} is not allowed; {reason}")
        self.field, self.value, self.reason = field, value, reason


@dataclass(frozen=True)
class Action:
    """One cascaded action: `kind` from KINDS, the service for service.*, queues for a purge."""

    kind: str
    service: str = ""
    queues: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ActionError("action", self.kind, f"choose one of {', '.join(KINDS)}")
        if self.kind.startswith("service."):
            if self.service in NOT_CASCADED:
                raise ActionError("service", self.service, NOT_CASCADED[self.service])
            if self.service not in SERVICE_NAMES:
                allowed = [n for n in SERVICE_NAMES if n not in NOT_CASCADED]
                raise ActionError("service", self.service or None,
                                  f"name one of the services: {', '.join(allowed)}")
        elif self.service:
            raise ActionError("service", self.service, f"{self.kind} takes no service")
        if self.kind == "queue.purge":
            if not self.queues or any(q not in PURGE_QUEUES for q in self.queues):
                raise ActionError("queues", list(self.queues),
                                  f"name one or more of {', '.join(PURGE_QUEUES)}")
            # As the purge endpoint does: "all" covers the others; each queue once.
            chosen = ("all",) if "all" in self.queues else tuple(dict.fromkeys(self.queues))
            object.__setattr__(self, "queues", chosen)
        elif self.queues:
            raise ActionError("queues", list(self.queues), f"{self.kind} takes no queues")

    @property
    def verb(self) -> str:
        return self.kind.partition(".")[2]

    @property
    def label(self) -> str:
        """How the action reads in messages: "service stop send", "queue purge remote"."""
        if self.kind.startswith("service."):
            return f"service {self.verb} {self.service}"
        if self.kind == "queue.purge":
            return f"queue purge {','.join(self.queues)}"
        return "queue process"

    def request(self) -> tuple[str, dict[str, Any] | None]:
        """The path (under the node's address) and JSON body of the node's own API call."""
        if self.kind.startswith("service."):
            return f"/api/v1/services/{self.service}/{self.verb}", None
        if self.kind == "queue.purge":
            return "/api/v1/queue/purge", {"queues": list(self.queues)}
        return "/api/v1/queue/process", None


@dataclass(frozen=True)
class NodeOutcome:
    node: str
    address: str
    state: str  # one of STATES
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """A node to act on: where it is, the certificate it recorded, and whether it is this one."""

    name: str
    address: str
    cert_pem: str
    local: bool


# ---- policy (no network) ---------------------------------------------------------------------


def all_done(outcomes: list[NodeOutcome]) -> bool:
    return bool(outcomes) and all(o.state == DONE for o in outcomes)


def cannot_call(target: Target) -> str | None:
    """Why a remote node cannot even be tried (it is then reported unreachable), or None."""
    if not target.address:
        return "no address recorded for this node (`mailyard cluster join --address URL`)"
    if not target.address.lower().startswith("https://"):
        return (f"its address {target.address} is not https://; node tokens are only sent "
                "over TLS (`mailyard cluster join --address https://…` on the node)")
    if "-----BEGIN CERTIFICATE-----" not in target.cert_pem:
        return ("no TLS certificate recorded for this node yet; it records one when it joins "
                "and with every heartbeat of its panel")
    return None


def _problem(payload: Any) -> str:
    if isinstance(payload, dict):
        for key in ("message", "detail"):
            if payload.get(key):
                return str(payload[key])
    return ""


def judge(action: Action, status: int, payload: Any) -> tuple[str, str]:
    """The state and detail of a node from its API's answer (status code and JSON body)."""
    if not 200 <= status < 300:
        reason = _problem(payload) or "no reason given"
        if status == 401:
            reason += " (the node refused the manager's node token; run `mailyard cluster " \
                      "init` on the manager to renew it)"
        return FAILED, f"HTTP {status}: {reason}"
    payload = payload if isinstance(payload, dict) else {}
    if action.kind.startswith("service."):
        state = str(payload.get("state", "unknown"))
        detail = f"{action.service}: {state}"
        if state not in EXPECTED_STATE[action.verb]:
            return FAILED, f"{detail} after {action.verb}"
        return DONE, detail
    result = payload.get("result")
    result = result if isinstance(result, dict) else {}
    if action.kind == "queue.process":
        waiting = result.get("waiting", "?")
        if not result.get("done", False):
            return FAILED, (f"{waiting} waiting; the send service did not take the request "
                            "in time")
        return DONE, f"{waiting} waiting; the send service is going through them"
    parts, unconfirmed = [], []
    for which in action.queues:
        outcome = result.get(which)
        outcome = outcome if isinstance(outcome, dict) else {}
        parts.append(f"{which}: {outcome.get('messages', '?')} messages")
        if not outcome.get("done", False):
            unconfirmed.append(which)
    if unconfirmed:
        return FAILED, (f"purge of {','.join(unconfirmed)} not confirmed by the send service "
                        f"in time ({'; '.join(parts)})")
    return DONE, "purged " + "; ".join(parts)


def unreachable_reason(exc: Exception) -> str:
    """What went wrong reaching a node, in words (connection, time limit or certificate)."""
    import httpx  # only when a node is called: httpx loads rich, which the panel needs not

    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, ssl.SSLCertVerificationError):
        return ("its TLS certificate is not the one it recorded in the store (refused: "
                f"{text})")
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {CONNECT_SECONDS:.0f} s"
    if isinstance(exc, httpx.TimeoutException):
        return (f"no answer within {ANSWER_SECONDS:.0f} s (the action may still finish on "
                "the node)")
    return text


# ---- running it --------------------------------------------------------------------------------


def require_manager(home: Home) -> None:
    """Refuse (ClusterError) unless this node is its cluster's manager."""
    current = manager(home)
    if current is None:
        raise ClusterError("this node is not in a cluster: cascaded actions need `mailyard "
                           "cluster init` on the manager (and the nodes joined to it)")
    if current.name != home.node_name:
        raise ClusterError(f"{home.node_name} is a member; cascaded actions are run from the "
                           f"manager, {current.name} at {current.address}")


def targets(home: Home) -> list[Target]:
    """Every node of the cluster, manager first, then by name."""
    with session_scope(home.db_url) as session:
        rows = list(session.execute(select(ClusterNode)).scalars())
    rows.sort(key=lambda n: (n.role != "manager", n.name))
    return [Target(n.name, n.address, n.cert_pem or "", n.name == home.node_name)
            for n in rows]


def run_local(home: Home, action: Action) -> tuple[int, dict[str, Any]]:
    """Do the action on this node, answering as the node's own API would (status, body)."""
    # through the root helper when it runs: this runs in the unprivileged panel too
    if action.kind.startswith("service."):
        try:
            helper.service_or_local(home, action.verb, action.service)
        except (ControlError, helper.HelperError) as exc:
            return 409, {"detail": str(exc)}
        states = {s.name: s.state for s in helper.status_or_local(home, with_versions=False)}
        return 200, {"name": action.service, "state": states[action.service]}

    try:
        if action.kind == "queue.process":
            result = helper.queue_or_local(home, "process")
            if not result.get("service_running", True):
                return 409, {"detail": "the send service is not running, so nothing can "
                                       "process the queue"}
            return 200, {"result": result}
        return 200, {"result": {which: helper.queue_or_local(home, "purge", which)
                                for which in action.queues}}
    except (QueueError, helper.HelperError) as exc:
        return 409, {"detail": str(exc)}


def call_node(target: Target, action: Action, token: str,
              client: Callable[..., httpx.Client] | None = None) -> NodeOutcome:
    """Ask one remote node's API to do the action; never raises."""
    import httpx  # only when a node is called: httpx loads rich, which the panel needs not

    why = cannot_call(target)
    if why:
        return NodeOutcome(target.name, target.address, UNREACHABLE, why)
    try:
        context = pinned_context(target.cert_pem)
    except TrustError as exc:
        return NodeOutcome(target.name, target.address, UNREACHABLE, str(exc))
    path, body = action.request()
    make = client or httpx.Client
    try:
        # trust_env=False: nodes talk to each other directly; a proxy or CA bundle from the
        # environment must not come between the manager and a pinned node.
        with make(verify=context, trust_env=False, follow_redirects=False,
                  timeout=httpx.Timeout(ANSWER_SECONDS, connect=CONNECT_SECONDS)) as http:
            response = http.post(target.address.rstrip("/") + path, json=body,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Accept": "application/json"})
    except (httpx.TransportError, ssl.SSLError, OSError) as exc:
        return NodeOutcome(target.name, target.address, UNREACHABLE, unreachable_reason(exc))
    try:
        payload = response.json()
    except ValueError:
        payload = {"detail": response.text[:200]}
    state, detail = judge(action, response.status_code, payload)
    return NodeOutcome(target.name, target.address, state, detail)


def _run_here(home: Home, target: Target, action: Action) -> NodeOutcome:
    try:
        status, payload = run_local(home, action)
    except Exception as exc:  # reported as this node's outcome, beside the others'
        status, payload = 500, {"detail": f"{type(exc).__name__}: {exc}"}
    state, detail = judge(action, status, payload)
    return NodeOutcome(target.name, target.address, state, detail)


def run_everywhere(home: Home, action: Action, token: str | None = None) -> list[NodeOutcome]:
    """Run `action` on every node of the cluster (this one locally); one outcome per node.

    Only the manager cascades (ClusterError elsewhere, or without the node token)."""
    require_manager(home)
    token = token or manager_token.read(home)
    nodes = targets(home)
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(nodes))),
                            thread_name_prefix="mailyard-cascade") as pool:
        futures = [pool.submit(_run_here, home, t, action) if t.local
                   else pool.submit(call_node, t, action, token) for t in nodes]
        return [f.result() for f in futures]

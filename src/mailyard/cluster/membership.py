"""Cluster membership in the shared store: the manager, join tokens, nodes and their reports.

Every node of a cluster points its home at the same PostgreSQL store (`mailyard init --db`).
The store is the cluster's only shared state: a node joins by proving a join token against the
hash kept there and adding its row to `nodes`; it reports its status into that row.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from .. import __version__
from ..services import helper
from ..store.db import session_scope
from ..store.models import ClusterNode, ClusterToken, SettingChange
from ..store.settings_store import load_settings

if TYPE_CHECKING:
    from ..home import Home

# A join token is good for this long: enough to set up the next nodes, short enough that a
# token pasted into a ticket stops admitting nodes.
TOKEN_LIFETIME = timedelta(hours=24)
TOKEN_PREFIX = "myc1-"
# A node that has not reported for this many heartbeats is shown as unreachable.
STALE_HEARTBEATS = 3
# Seconds between status reports (and fallback checks for pending changes) of a node's agent.
HEARTBEAT_SECONDS = 15.0

ROLES = ("manager", "member")


class ClusterError(RuntimeError):
    """A cluster command was refused; the message says why and what to do."""


def _now() -> datetime:
    return datetime.now(UTC)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def require_shared_store(home: Home) -> None:
    if not home.db_url.startswith(("postgresql", "postgres")):
        raise ClusterError(
            f"{home.db_url.split(':', 1)[0]}: this node's store is not PostgreSQL; the nodes of "
            "a cluster share one PostgreSQL store (`mailyard init --db postgresql://…`)")


def default_address(home: Home) -> str:
    """The node's panel/API URL as other machines reach it: its hostname and panel port."""
    settings = load_settings(home)
    return f"https://{settings['server.hostname']}:{home.port('panel', settings)}"


def _version() -> str:
    return __version__


def own_certificate(home: Home) -> str | None:
    """This node's TLS certificate as PEM text (what its panel presents), or None when it cannot
    be read; the manager pins it when it calls the node (see mailyard.cluster.trust)."""
    try:
        pem = home.cert_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return pem if "-----BEGIN CERTIFICATE-----" in pem else None


def _newest_change(session: Any) -> int:
    return int(session.execute(select(func.coalesce(func.max(SettingChange.id), 0))).scalar())


def manager(home: Home) -> ClusterNode | None:
    with session_scope(home.db_url) as session:
        return session.execute(select(ClusterNode).where(ClusterNode.role == "manager")
                               ).scalars().first()


def init_manager(home: Home, address: str | None = None) -> ClusterNode:
    """Make this node the cluster's manager (again, harmlessly, when it already is)."""
    require_shared_store(home)
    current = manager(home)
    if current is not None and current.name != home.node_name:
        raise ClusterError(f"{current.name}: this store already has a manager "
                           f"({current.address}); join it with `mailyard cluster join`")
    address = address or default_address(home)
    with session_scope(home.db_url) as session:
        node = session.get(ClusterNode, home.node_name)
        if node is None:
            node = ClusterNode(name=home.node_name, joined_change_id=_newest_change(session))
            session.add(node)
        node.role, node.address, node.port_base = "manager", address, home.port_base
        node.version, node.last_seen = _version(), _now()
        node.cert_pem = own_certificate(home) or node.cert_pem
    return node


def make_token(home: Home) -> str:
    """A new join token (shown once; the store keeps its hash). Only the manager makes them."""
    require_shared_store(home)
    current = manager(home)
    if current is None:
        raise ClusterError("no cluster yet: run `mailyard cluster init` on the manager first")
    if current.name != home.node_name:
        raise ClusterError(f"{home.node_name} is not the manager ({current.name} is); "
                           "make join tokens there")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(home.db_url) as session:
        session.add(ClusterToken(token_sha256=_sha256(token), expires_at=_now() + TOKEN_LIFETIME))
    return token


def join(home: Home, manager_url: str, token: str,
         address: str | None = None) -> tuple[ClusterNode, str]:
    """Add this node to the cluster of its store, admitted by a token from the manager.

    The store is shared, so the manager's URL is not contacted: the token is checked against
    the hash in the store. The URL is compared with the manager's registered address, and a
    difference comes back as a warning (a node set up against the wrong store shows there)."""
    require_shared_store(home)
    current = manager(home)
    if current is None:
        raise ClusterError("this store has no cluster manager: run `mailyard cluster init` on "
                           "the manager, or check this node's --db URL")
    warning = ""
    if _norm(manager_url) != _norm(current.address):
        warning = (f"{manager_url}: the manager of this node's store is {current.name} at "
                   f"{current.address}; joined its cluster (the store decides, not the URL)")
    digest = _sha256(token.strip())
    address = address or default_address(home)
    with session_scope(home.db_url) as session:
        row = session.get(ClusterToken, digest)
        if row is None or _aware(row.expires_at) < _now():
            raise ClusterError("the join token is unknown or expired; make a new one with "
                               "`mailyard cluster token` on the manager")
        node = session.get(ClusterNode, home.node_name)
        if node is None:
            node = ClusterNode(name=home.node_name, role="member",
                               joined_change_id=_newest_change(session))
            session.add(node)
        node.address, node.port_base, node.token_hash = address, home.port_base, digest
        node.version, node.last_seen = _version(), _now()
        node.cert_pem = own_certificate(home) or node.cert_pem
    return node, warning


def leave(home: Home, name: str) -> None:
    """Remove a node from the list (its home and store are untouched)."""
    with session_scope(home.db_url) as session:
        node = session.get(ClusterNode, name)
        if node is None:
            raise ClusterError(f"{name}: no such node; `mailyard cluster nodes` lists them")
        if node.role == "manager":
            raise ClusterError(f"{name} is the manager and cannot be removed")
        session.delete(node)


def is_member(home: Home) -> bool:
    with session_scope(home.db_url) as session:
        return session.get(ClusterNode, home.node_name) is not None


def report_status(home: Home) -> bool:
    """Write this node's heartbeat (version, each service's state, last_seen, its TLS
    certificate, which may have been replaced since the last one); False when the node is not
    a member of a cluster (nothing is written then)."""
    try:  # through the root helper when it runs: the agent runs in the unprivileged panel
        states = {s.name: s.state for s in helper.status_or_local(home, with_versions=False)}
    except Exception as exc:  # supervisord half-started or gone: say so rather than skip
        states = {"supervisor": f"unknown ({type(exc).__name__})"}
    with session_scope(home.db_url) as session:
        node = session.get(ClusterNode, home.node_name)
        if node is None:
            return False
        node.version, node.services = _version(), json.dumps(states, sort_keys=True)
        node.port_base, node.last_seen = home.port_base, _now()
        node.cert_pem = own_certificate(home) or node.cert_pem
    return True


def list_nodes(home: Home, heartbeat_seconds: float | None = None) -> list[dict[str, Any]]:
    """Every node of the cluster, manager first, with what it last reported."""
    stale_after = STALE_HEARTBEATS * (heartbeat_seconds or HEARTBEAT_SECONDS)
    now = _now()
    with session_scope(home.db_url) as session:
        nodes = list(session.execute(select(ClusterNode)).scalars())
    rows = []
    for node in sorted(nodes, key=lambda n: (n.role != "manager", n.name)):
        seen = _aware(node.last_seen) if node.last_seen else None
        age = (now - seen).total_seconds() if seen else None
        try:
            services = json.loads(node.services or "{}")
        except ValueError:
            services = {}
        rows.append({"name": node.name, "role": node.role, "address": node.address,
                     "port_base": node.port_base, "version": node.version, "last_seen": seen,
                     "seconds_since_seen": None if age is None else max(0, int(age)),
                     "reachable": age is not None and age <= stale_after,
                     "services": services})
    return rows


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _norm(url: str) -> str:
    return url.strip().rstrip("/").lower()

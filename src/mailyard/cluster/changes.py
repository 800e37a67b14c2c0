"""Cascaded setting changes: which node applied which change, and applying the pending ones.

A cascaded change is a row in `setting_changes`; each node that has applied it (reloaded the
services it affects) leaves a mark in `setting_change_marks`, ok or failed with the reason. A
node applies the changes newer than its joining that it has no mark for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..services.helper import apply_or_local
from ..settings.registry import REGISTRY
from ..store.db import session_scope
from ..store.models import ClusterNode, SettingChange, SettingChangeMark
from ..store.settings_store import mark_applied

if TYPE_CHECKING:
    from ..home import Home

# How many recent changes `mailyard cluster changes` shows unless told otherwise.
RECENT_CHANGES = 20


def pending_changes(home: Home) -> list[SettingChange]:
    """Changes this node has not applied yet (none when it is not a member of a cluster)."""
    with session_scope(home.db_url) as session:
        node = session.get(ClusterNode, home.node_name)
        if node is None:
            return []
        marked = select(SettingChangeMark.change_id).where(
            SettingChangeMark.node == home.node_name)
        return list(session.execute(
            select(SettingChange).where(SettingChange.id > node.joined_change_id,
                                        SettingChange.id.not_in(marked))
            .order_by(SettingChange.id)).scalars())


@dataclass
class Applied:
    change_ids: list[int] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def apply_pending(home: Home) -> Applied:
    """Bring this node's running services in line with every pending change, then mark them.

    The values are already in the store (a cascade stores the cluster-wide value and drops the
    overrides), so applying means re-rendering and reloading what the keys affect."""
    changes = pending_changes(home)
    result = Applied(change_ids=[c.id for c in changes])
    if not changes:
        return result
    keys: list[str] = []
    for change in changes:
        if change.key in REGISTRY and change.key not in keys:
            keys.append(change.key)
    try:
        # through the root helper when it runs: the agent runs in the unprivileged panel
        reloaded, restarted, result.problems = apply_or_local(home, keys)
        result.reloaded = reloaded + restarted
    except Exception as exc:  # recorded as the reason; the node tries again on a later change
        result.problems = [f"{type(exc).__name__}: {exc}"]
    mark_applied(home, result.change_ids, result.problems)
    return result


def changes_report(home: Home, limit: int = RECENT_CHANGES) -> list[dict[str, Any]]:
    """The most recent changes, newest first, each with every node's outcome:
    applied, failed (with the reason), pending, or n/a for a node that joined after it."""
    with session_scope(home.db_url) as session:
        changes = list(session.execute(
            select(SettingChange).order_by(SettingChange.id.desc()).limit(limit)).scalars())
        nodes = list(session.execute(select(ClusterNode).order_by(ClusterNode.name)).scalars())
        ids = [c.id for c in changes]
        marks = {(m.node, m.change_id): m for m in session.execute(
            select(SettingChangeMark).where(SettingChangeMark.change_id.in_(ids))).scalars()}
    report = []
    for change in changes:
        outcomes = []
        for node in nodes:
            mark = marks.get((node.name, change.id))
            if mark is not None:
                state = "applied" if mark.ok else "failed"
                outcomes.append({"node": node.name, "state": state, "error": mark.error,
                                 "at": mark.applied_at})
            elif change.id <= node.joined_change_id:
                outcomes.append({"node": node.name, "state": "n/a", "error": "", "at": None})
            else:
                outcomes.append({"node": node.name, "state": "pending", "error": "",
                                 "at": None})
        report.append({"id": change.id, "key": change.key, "value": change.value,
                       "origin": change.origin, "created_at": change.created_at,
                       "nodes": outcomes})
    return report

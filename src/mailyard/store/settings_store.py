"""Reading and changing a node's settings in the store, validated by the registry.

`write_settings` is the one writer of setting rows (and of the change rows a cascade leaves);
`mailyard.services.apply_settings.change_settings` sits above it and brings the services in
line. `set_setting` and `set_many` are its short forms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, text

from ..home import register_settings_loader
from ..settings.registry import REGISTRY, setting
from .cache import read_scope
from .db import session_scope
from .models import SettingChange, SettingChangeMark, SettingRow

if TYPE_CHECKING:
    from ..home import Home

# The PostgreSQL channel on which a cascaded change is announced (payload: the change's id).
NOTIFY_CHANNEL = "mailyard_settings"
# Where written values apply: "node", this node's own override; "cluster", the cluster-wide
# value (and on a single node simply the value), this node's override of the key dropped so
# that the change is what it sees; "cascade", the cluster-wide value with every node's
# override dropped and a change row, announced, that each other node re-applies.
WRITE_SCOPES = ("node", "cluster", "cascade")


def load_settings(home: Home) -> dict[str, Any]:
    """Every setting's typed value: the default, the cluster-wide value, then this node's."""
    values = {key: s.default for key, s in REGISTRY.items()}
    with read_scope(home) as session:  # the local cache while a cluster's store is away
        rows = session.execute(
            select(SettingRow).where(SettingRow.node.in_(["", home.node_name]))
        ).scalars().all()
    # Cluster-wide first, so a node's own value wins.
    for row in sorted(rows, key=lambda r: r.node != ""):
        spec = REGISTRY.get(row.key)
        if spec is None:
            continue  # a setting of a newer or older version; ignored, never fatal
        try:
            values[row.key] = spec.parse(row.value)
        except ValueError:
            continue  # a value that no longer validates keeps the default
    return values


register_settings_loader(load_settings)


def write_settings(home: Home, values: dict[str, Any], scope: str
                   ) -> tuple[dict[str, Any], list[int]]:
    """Validate every value first (SettingError names the first refused one; nothing is
    stored then); store all of them in one transaction with the semantics of `scope` (see
    WRITE_SCOPES). A cascade's change rows are announced by NOTIFY, delivered at commit.
    Returns the typed values and the ids of the change rows (only a cascade writes any)."""
    if scope not in WRITE_SCOPES:
        raise ValueError(f"setting scope {scope!r} is not one of {', '.join(WRITE_SCOPES)}")
    typed = {key: setting(key).parse(value) for key, value in values.items()}
    node = home.node_name if scope == "node" else ""
    change_ids: list[int] = []
    with session_scope(home.db_url) as session:
        for key, val in typed.items():
            formatted = REGISTRY[key].format(val)
            row = session.get(SettingRow, {"key": key, "node": node})
            if row is None:
                session.add(SettingRow(key=key, node=node, value=formatted))
            else:
                row.value = formatted
            if scope == "cluster":
                session.execute(delete(SettingRow).where(SettingRow.key == key,
                                                         SettingRow.node == home.node_name))
            elif scope == "cascade":
                session.execute(delete(SettingRow).where(SettingRow.key == key,
                                                         SettingRow.node != ""))
                change = SettingChange(key=key, value=formatted, origin=home.node_name)
                session.add(change)
                session.flush()
                change_ids.append(change.id)
        if change_ids and session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": NOTIFY_CHANNEL, "payload": str(max(change_ids))})
    return typed, change_ids


def set_setting(home: Home, key: str, value: Any, *, node_only: bool = False) -> Any:
    """Validate and store one value; raises SettingError and changes nothing when refused.

    Without `node_only` the value is the cluster-wide one (and on a single node simply the
    value); a node's own override of that key is dropped so the change is what it sees.
    """
    typed, _ = write_settings(home, {key: value}, "node" if node_only else "cluster")
    return typed[key]


def set_many(home: Home, values: dict[str, Any]) -> dict[str, Any]:
    """Validate every value first; store all of them in one transaction, or none."""
    return write_settings(home, values, "cluster")[0]


def mark_applied(home: Home, change_ids: list[int], problems: list[str]) -> None:
    """Record this node's outcome for each cascaded change (a second mark replaces the first)."""
    error = "; ".join(problems)
    with session_scope(home.db_url) as session:
        for change_id in change_ids:
            mark = session.get(SettingChangeMark, {"node": home.node_name,
                                                   "change_id": change_id})
            if mark is None:
                session.add(SettingChangeMark(node=home.node_name, change_id=change_id,
                                              ok=not problems, error=error))
            else:
                mark.ok, mark.error = not problems, error

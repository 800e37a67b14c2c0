"""Reading and changing a node's settings in the store, validated by the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from ..settings.registry import REGISTRY, setting
from .cache import read_scope
from .db import session_scope
from .models import SettingRow

if TYPE_CHECKING:
    from ..home import Home


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


def set_setting(home: Home, key: str, value: Any, *, node_only: bool = False) -> Any:
    """Validate and store one value; raises SettingError and changes nothing when refused.

    Without `node_only` the value is the cluster-wide one (and on a single node simply the
    value); a node's own override of that key is dropped so the change is what it sees.
    """
    spec = setting(key)
    typed = spec.parse(value)
    text = spec.format(typed)
    node = home.node_name if node_only else ""
    with session_scope(home.db_url) as session:
        row = session.get(SettingRow, {"key": key, "node": node})
        if row is None:
            session.add(SettingRow(key=key, node=node, value=text))
        else:
            row.value = text
        if not node_only:
            session.execute(delete(SettingRow).where(SettingRow.key == key,
                                                     SettingRow.node == home.node_name))
    return typed


def set_many(home: Home, values: dict[str, Any]) -> dict[str, Any]:
    """Validate every value first; store all of them in one transaction, or none."""
    typed = {key: setting(key).parse(value) for key, value in values.items()}
    with session_scope(home.db_url) as session:
        for key, val in typed.items():
            text = REGISTRY[key].format(val)
            row = session.get(SettingRow, {"key": key, "node": ""})
            if row is None:
                session.add(SettingRow(key=key, node="", value=text))
            else:
                row.value = text
            session.execute(delete(SettingRow).where(SettingRow.key == key,
                                                     SettingRow.node == home.node_name))
    return typed

"""The marker HOME/db/store-away that switches this node's Dovecot to the local cache."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import cache_path, uses_cache

if TYPE_CHECKING:
    from ..home import Home

AWAY_MARKER = "store-away"


def _away_marker(home: Home) -> Path:
    """Beside the cache in HOME/db (root's, 2770 with the group mailyard-store): the panel,
    which runs the cluster agent as mailyard-panel, may write it there; HOME/run is root's."""
    return cache_path(home).parent / AWAY_MARKER


def store_marked_away(home: Home) -> bool:
    return uses_cache(home) and _away_marker(home).exists()


def mark_store_away(home: Home, away: bool, reason: str = "") -> bool:
    """Leave or remove the marker; True when that changed anything."""
    marker = _away_marker(home)
    if away == marker.exists():
        return False
    if away:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(AWAY_MARKER + ".tmp")
        tmp.write_text(f"{datetime.now(UTC).isoformat()} {reason}\n")
        os.replace(tmp, marker)
    else:
        marker.unlink(missing_ok=True)
    return True

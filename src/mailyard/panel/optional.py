"""Parts of the node the panel uses when they are installed: loaded lazily, None when absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from fastapi import HTTPException

# What each optional part is called on the pages when it is missing.
PARTS = {
    "mailyard.queue.admin": "queue administration",
    "mailyard.filters.prefs": "SpamAssassin preferences",
    "mailyard.filters.virusdb": "virus definition information",
    "mailyard.filters.freshclam": "Freshclam status",
}


def load(module: str) -> ModuleType | None:
    """The module, or None when it (not one of its own imports) does not exist."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


def require(module: str) -> ModuleType:
    """The module, or a 503 answer that says which part of the node is not available."""
    found = load(module)
    if found is None:
        raise HTTPException(503, f"{PARTS.get(module, module)} is not available on this node "
                            f"({module} is not installed)")
    return found

"""Settings: the registry (what exists and what is allowed) and access to a node's values."""

from .registry import AUTH_MODES, REGISTRY, SERVICE_NAMES, Setting, defaults, setting
from .types import SettingError

__all__ = [
    "AUTH_MODES", "REGISTRY", "SERVICE_NAMES", "Setting", "SettingError", "defaults", "setting",
    "store_get",
]


def store_get(home: object, key: str) -> object:
    """The current value of one setting on the node at `home` (a path or a Home)."""
    from ..home import Home
    from ..store.settings_store import load_settings

    node = home if isinstance(home, Home) else Home.find(str(home))
    return load_settings(node)[key]

"""Settings: the registry (what exists and what is allowed); a node's values are read and
written by the store (mailyard.store.settings_store)."""

from .registry import AUTH_MODES, REGISTRY, SERVICE_NAMES, Setting, defaults, setting
from .types import SettingError

__all__ = [
    "AUTH_MODES", "REGISTRY", "SERVICE_NAMES", "Setting", "SettingError", "defaults", "setting",
]

"""Changing settings on a node: validate, store, then bring the running services in line.

The CLI, the panel and the API all change settings through `change_settings`, so a change has
the same effect wherever it is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .registry import REGISTRY, setting

if TYPE_CHECKING:
    from ..home import Home


@dataclass
class ChangeResult:
    values: dict[str, Any]
    reloaded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def affected_services(keys: list[str]) -> list[str]:
    names: list[str] = []
    for key in keys:
        for name in REGISTRY[key].services:
            if name not in names:
                names.append(name)
    return names


def change_settings(home: Home, values: dict[str, Any], apply: bool = True) -> ChangeResult:
    """Validate all values (SettingError names the first bad one; nothing is stored then),
    store them in one transaction, and reload the running services they affect."""
    from ..store.settings_store import set_many

    for key in values:
        setting(key)  # unknown keys are refused before anything else
    typed = set_many(home, values)
    result = ChangeResult(values=typed)
    if not apply:
        return result
    keys = list(typed)
    if "spam.bayes_imap_training" in typed:
        try:
            from ..mailboxes import ensure_all_maildirs  # type: ignore[attr-defined]
        except ImportError:
            ensure_all_maildirs = None
        if ensure_all_maildirs is not None:
            ensure_all_maildirs(home)
    from ..services import control

    if any(k.startswith("service.") for k in keys):
        try:
            control.apply_supervisor_settings(home)
        except Exception as exc:  # the value is stored; report what could not be applied
            result.problems.append(f"supervisor: {exc}")
    if not control.supervisor_running(home):
        return result
    running = {s.name for s in control.status(home, with_versions=False) if s.state == "RUNNING"}
    for name in affected_services([k for k in keys if not k.startswith("service.")]):
        if name not in running:
            continue
        try:
            control.reload(home, name)
            result.reloaded.append(name)
        except Exception as exc:
            result.problems.append(f"{name}: {exc}")
    return result

"""Changing settings on a node: validate, store, then bring the running services in line.

The CLI, the panel and the API all change settings through `change_settings`, so a change has
the same effect wherever it is made. It sits above the settings registry, the store (whose
`write_settings` is the one writer of setting rows and change records) and service control;
the cluster's agent calls `bring_in_line` for the changes other nodes cascade.

Scope: a change made without `cascade` is this node's own value (an override in the store);
with `cascade` it becomes the cluster-wide value, every node's override of it is dropped, and a
row in `setting_changes` (plus a PostgreSQL NOTIFY) tells the other nodes to re-apply it. On a
single node both end the same way: the node uses the new value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..mailboxes import MailRootError, prepare_mail_root
from ..settings.registry import REGISTRY, setting
from ..settings.types import SettingError
from ..store.accounts import ensure_all_maildirs
from ..store.settings_store import load_settings, mark_applied, write_settings
from . import control

if TYPE_CHECKING:
    from ..home import Home
# The setting whose change touches the filesystem as well as the services (see check_mail_root).
MAIL_ROOT = "mail.root"


# apply_keys' signature: (home, keys, unchanged) -> (reloaded, restarted, problems)
Applier = Callable[["Home", list[str], frozenset[str]], tuple[list[str], list[str], list[str]]]


@dataclass
class ChangeResult:
    values: dict[str, Any]
    reloaded: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # for a setting read at start only
    problems: list[str] = field(default_factory=list)
    cascade: bool = False
    change_ids: list[int] = field(default_factory=list)


def affected_services(keys: list[str]) -> list[str]:
    names: list[str] = []
    for key in keys:
        for name in REGISTRY[key].services:
            if name not in names:
                names.append(name)
    return names


def refuse_cascade(keys: list[str]) -> None:
    """A setting that belongs to one node (its hostname, its ports) never cascades."""
    for key in keys:
        spec = setting(key)
        if not spec.cascade:
            raise SettingError(key, "cascade",
                               "this setting belongs to one node and cannot be cascaded to "
                               "other nodes; set it on each node without cascade")


def store_values(home: Home, values: dict[str, Any], cascade: bool) -> tuple[dict[str, Any],
                                                                               list[int]]:
    """Validate every value first; store all of them in one transaction, or none.

    Without `cascade` each value is this node's override. With it, each is the cluster-wide
    value, every node's override of the key is dropped, and a change row is written and
    announced (NOTIFY, delivered at commit) for the other nodes. Returns the typed values and
    the ids of the change rows."""
    return write_settings(home, values, "cascade" if cascade else "node")


def check_mail_root(home: Home, value: Any) -> None:
    """Refuse (SettingError) a mail.root this node cannot use; create it when it is missing.
    Done before a change is stored, on the node where it is made."""
    typed = setting(MAIL_ROOT).parse(value)
    try:
        prepare_mail_root(home.mail_root_in({MAIL_ROOT: typed}))
    except MailRootError as exc:
        raise SettingError(MAIL_ROOT, value, str(exc)) from None


def _follow_mail_root(home: Home) -> list[str]:
    """After a mail.root change: this process's Home uses the new root, which is created if
    missing. Returns the problem when this node cannot use it (the value stays stored;
    deliveries are deferred, not lost, until it is fixed)."""
    root = home.use_settings(load_settings(home))
    try:
        prepare_mail_root(root)
    except MailRootError as exc:
        return [f"{MAIL_ROOT}: {exc}"]
    return []


def restart_services(keys: list[str]) -> list[str]:
    """The services that must restart for `keys` to take effect: those of a setting they read
    at start only (a listening port or address, bound before they drop root, so that a port
    below 1024 can be bound again only by a new process started as root)."""
    return affected_services([k for k in keys if REGISTRY[k].at_start])


def bring_in_line(home: Home, keys: list[str]) -> tuple[list[str], list[str]]:
    """Make this node's running services use the stored values of `keys` (see `apply_keys`);
    returns (services reloaded or restarted, problems)."""
    reloaded, restarted, problems = apply_keys(home, keys)
    return reloaded + restarted, problems


def apply_keys(home: Home, keys: list[str], unchanged: frozenset[str] = frozenset()
               ) -> tuple[list[str], list[str], list[str]]:
    """Make this node's running services use the stored values of `keys`: supervisord's
    configuration for service.* keys, a restart through the supervisor of each running
    service that reads one of them at start only, a reload of each other running service
    they affect. A key in `unchanged` (stored again with the value it had, as a panel box
    sends every field) restarts nothing. Returns (reloaded, restarted, problems); a problem
    never undoes the stored value."""
    reloaded: list[str] = []
    restarted: list[str] = []
    problems: list[str] = []
    if MAIL_ROOT in keys:
        problems += _follow_mail_root(home)
    if "spam.bayes_imap_training" in keys:
        ensure_all_maildirs(home)
    if any(k.startswith("service.") for k in keys):
        try:
            control.apply_supervisor_settings(home)
        except Exception as exc:  # the value is stored; report what could not be applied
            problems.append(f"supervisor: {exc}")
    if not control.supervisor_running(home):
        return reloaded, restarted, problems
    running = {s.name for s in control.status(home, with_versions=False) if s.state == "RUNNING"}
    to_restart = restart_services([k for k in keys if k not in unchanged])
    for name in affected_services([k for k in keys if not k.startswith("service.")]):
        if name not in running:
            continue
        try:
            if name in to_restart:
                control.restart(home, name)
                restarted.append(name)
            else:
                control.reload(home, name)
                reloaded.append(name)
        except Exception as exc:
            problems.append(f"{name}: {exc}")
    return reloaded, restarted, problems


def _values_read_at_start(home: Home, values: dict[str, Any]) -> dict[str, Any]:
    """This node's current values of the settings in `values` that are read at start only."""
    keys = [k for k in values if REGISTRY[k].at_start]
    if not keys:
        return {}
    current = load_settings(home)
    return {k: current[k] for k in keys}


def change_settings(home: Home, values: dict[str, Any], apply: bool = True,
                    cascade: bool = False, applier: Applier | None = None) -> ChangeResult:
    """Validate all values (SettingError names the first bad one; nothing is stored then),
    store them in one transaction (for this node, or with `cascade` for every node), and
    reload the running services they affect on this node. Other nodes re-apply a cascaded
    change themselves (mailyard.cluster.agent). `applier` does the reloading in
    `apply_keys`' place (the unprivileged panel hands it to the root helper)."""
    for key in values:
        setting(key)  # unknown keys are refused before anything else
    if cascade:
        refuse_cascade(list(values))
    if MAIL_ROOT in values:
        check_mail_root(home, values[MAIL_ROOT])
    before = _values_read_at_start(home, values)
    typed, change_ids = store_values(home, values, cascade)
    result = ChangeResult(values=typed, cascade=cascade, change_ids=change_ids)
    if apply:
        unchanged = frozenset(k for k, old in before.items() if typed.get(k) == old)
        result.reloaded, result.restarted, result.problems = (applier or apply_keys)(
            home, list(typed), unchanged)
    if change_ids:
        mark_applied(home, change_ids, result.problems if apply else [])
    return result

"""Advanced SpamAssassin preferences (guide 6.1.4): an allow-list, validation, and their store.

An administrator adds preferences with a scope: `global` (the site config, local.cf),
`domain:NAME` (every mailbox of that domain) or `mailbox:ADDRESS` (one mailbox); the last two
end up in the mailboxes' user_prefs files, the mailbox's own lines after its domain's so that
they win. Only the preferences listed in ALLOWED can be set, each with its own value check,
so nothing can reach SpamAssassin's parser that would include files, run code or change where
it reads and writes: no `include`, no newlines, no `eval:` tests, no code inside patterns.
Rule definitions (header, body, ...) are site-wide only: SpamAssassin compiles rules into
Perl, and it keeps them out of user_prefs unless `allow_user_rules` is on, which we never set.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..services import control
from ..store.db import session_scope
from ..store.models import SpamPreference
from . import spamd
from .pref_rules import (
    ALLOWED,
    MAX_VALUE_LENGTH,
    RULE_NAME,
    SKIPPED_LINE,
    Allowed,
    Preference,
    PreferenceError,
    config_line,
    config_lines,
    list_preferences,
    normalise_scope,
    validate,
)

if TYPE_CHECKING:
    from ..home import Home

# The grammar lives in filters.pref_rules; it is named here too for the callers of this module.
__all__ = ["ALLOWED", "MAX_VALUE_LENGTH", "RULE_NAME", "SKIPPED_LINE", "Allowed", "Preference",
           "PreferenceError", "add_preference", "config_line", "config_lines",
           "delete_preference", "edit_preference", "list_preferences", "normalise_scope",
           "validate"]


def add_preference(home: Home, scope: str, preference: str, value: str,
                   render: bool = True) -> Preference:
    """Validate and store one preference; re-render spamd's files unless told not to."""
    name, checked, scope = validate(preference, value, scope)
    with session_scope(home.db_url) as session:
        row = SpamPreference(scope=scope, preference=name, value=checked)
        session.add(row)
        session.flush()
        result = Preference(row.id, row.scope, row.preference, row.value)
    if render:
        _render(home, global_changed=scope == "global")
    return result


def edit_preference(home: Home, pref_id: int, value: str, preference: str | None = None,
                    scope: str | None = None, render: bool = True) -> Preference:
    """Change a stored preference's value (and optionally its name or scope)."""
    with session_scope(home.db_url) as session:
        row = session.get(SpamPreference, pref_id)
        if row is None:
            raise PreferenceError(f"there is no spam preference with id {pref_id}")
        name, checked, new_scope = validate(preference or row.preference, value,
                                            scope or row.scope)
        touches_global = "global" in (row.scope, new_scope)
        row.preference, row.value, row.scope = name, checked, new_scope
        result = Preference(row.id, row.scope, row.preference, row.value)
    if render:
        _render(home, global_changed=touches_global)
    return result


def delete_preference(home: Home, pref_id: int, render: bool = True) -> None:
    with session_scope(home.db_url) as session:
        row = session.get(SpamPreference, pref_id)
        if row is None:
            raise PreferenceError(f"there is no spam preference with id {pref_id}")
        touches_global = row.scope == "global"
        session.delete(row)
    if render:
        _render(home, global_changed=touches_global)


def _render(home: Home, global_changed: bool = False) -> None:
    """Bring spamd's files in line with the store. Domain and mailbox preferences take effect
    with the next message. Global ones are in local.cf, which spamd reads when it starts or
    reloads; a process that may not write the site config (it belongs to root) leaves that to
    the next start or reload of spamd, which renders it."""

    log = logging.getLogger("mailyard.filters.prefs")
    try:
        spamd.render(home)
    except PermissionError as exc:
        spamd.render_users(home)
        log.warning("global SpamAssassin preferences apply when spamd is next reloaded: %s",
                    exc)
        return
    if global_changed:
        _reload_spamd(home, log)


def _reload_spamd(home: Home, log: Any) -> None:
    """Make a running spamd read local.cf again (SIGHUP through the supervision layer)."""
    try:
        if control.supervisor_running(home):
            control.reload(home, "spamd")
    except Exception as exc:  # the change is stored and rendered; say what did not happen
        log.warning("spamd was not reloaded (global preferences apply at its next "
                    "reload or start): %s", exc)

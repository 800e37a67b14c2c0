"""Which of Dovecot's four listeners are switched on: runtime state kept in HOME/run/.

One Dovecot process serves pop3, pop3s, imap and imaps. Stopping one of them must leave the
others serving, so each has an on/off state of its own that the configuration is rendered from.
The state lives in the run directory because it describes the running node, not its settings:
"start on boot" (a setting) decides what the node starts with; this file records what an
administrator switched on or off since. A listener without a recorded state follows its
start-on-boot setting.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..settings.registry import value

if TYPE_CHECKING:
    from ..home import Home

# The four logical services, in display order; each is one Dovecot inet_listener.
LISTENERS: tuple[str, ...] = ("pop3", "pop3s", "imap", "imaps")

STATE_FILE = "dovecot-listeners.json"
LOCK_FILE = "dovecot-listeners.lock"


class ListenerError(ValueError):
    """An unknown listener name."""


def check_name(name: str) -> str:
    if name not in LISTENERS:
        raise ListenerError(f"{name!r} is not a Dovecot service; the services are "
                            f"{', '.join(LISTENERS)}")
    return name


def state_path(home: Home) -> Path:
    return home.run_dir / STATE_FILE


def _recorded(home: Home) -> dict[str, bool]:
    path = state_path(home)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a damaged file is treated as "nothing recorded": start-on-boot decides
    if not isinstance(data, dict):
        return {}
    return {k: bool(v) for k, v in data.items() if k in LISTENERS}


def enabled(home: Home, settings: dict[str, Any]) -> dict[str, bool]:
    """Every listener's on/off state: as recorded, else its start-on-boot setting."""
    recorded = _recorded(home)
    return {name: recorded.get(name, bool(value(settings, f"service.{name}.start_on_boot")))
            for name in LISTENERS}


def set_enabled(home: Home, name: str, on: bool) -> None:
    """Record one listener's state (atomically; the other listeners keep theirs)."""
    check_name(name)
    recorded = _recorded(home)
    recorded[name] = on
    home.run_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(home)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(recorded, sort_keys=True) + "\n")
    os.replace(tmp, path)


def forget(home: Home) -> None:
    """Drop every recorded state, so that start-on-boot decides again (a fresh node start)."""
    state_path(home).unlink(missing_ok=True)


@contextmanager
def locked(home: Home) -> Iterator[None]:
    """Hold the node's Dovecot control lock: the CLI and the panel may switch listeners at the
    same moment, and each switch reads, changes and writes the state, then reloads."""
    home.run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(home.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock

"""Supervision with real child processes: up, status, stop/start, auto-restart, memory limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from tests.conftest import VENV_BIN
from tests.integration.conftest import only_services

from mailyard.services import control
from mailyard.store.settings_store import set_setting


def _state(home, name):
    return {s.name: s for s in control.status(home, with_versions=False)}[name]


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_status_json_of_a_running_node(running_node, cli_env):
    out = subprocess.run([str(VENV_BIN / "mailyard"), "status", "--json"], env=cli_env,
                         capture_output=True, text=True, timeout=60)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for name in ("smtp", "submission", "send"):
        assert rows[name]["state"] == "RUNNING"
        assert isinstance(rows[name]["pid"], int)
        assert rows[name]["version"].startswith("mailyard")
    assert rows["spamd"]["state"] == "STOPPED" and rows["spamd"]["pid"] is None
    assert rows["imap"]["state"] == "RUNNING"
    assert "Dovecot" in rows["imap"]["version"] or rows["imap"]["version"][0].isdigit()


def test_stop_and_start_one_service(running_node):
    home = running_node
    control.stop(home, "smtp")
    assert _state(home, "smtp").state == "STOPPED"
    assert _state(home, "send").state == "RUNNING"
    control.start(home, "smtp")
    control.wait_ready(home, ["smtp"], timeout=30)
    assert _state(home, "smtp").state == "RUNNING"


def _running_pid(home, name: str) -> int:
    assert _wait(lambda: _state(home, name).pid is not None), control.log_tail(home, name, 40)
    return _state(home, name).pid


def test_auto_restart_brings_a_killed_service_back(running_node):
    home = running_node
    pid = _running_pid(home, "send")
    os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: (_state(home, "send").pid or pid) != pid
                 and _state(home, "send").state == "RUNNING")


def test_without_auto_restart_a_killed_service_stays_down(running_node):
    home = running_node
    set_setting(home, "service.send.auto_restart", False)
    control.apply_supervisor_settings(home)
    control.start(home, "send")
    control.wait_ready(home, ["send"], timeout=30)
    pid = _running_pid(home, "send")
    os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: _state(home, "send").state in ("STOPPED", "FATAL"))
    time.sleep(2)
    assert _state(home, "send").state in ("STOPPED", "FATAL")


def test_the_memory_limit_is_applied_before_the_program_starts(running_node):
    home = running_node
    set_setting(home, "service.send.memory_limit_mb", 700)
    control.restart(home, "send")
    control.wait_ready(home, ["send"], timeout=30)
    pid = _running_pid(home, "send")

    def limit_line() -> str:
        limits = open(f"/proc/{pid}/limits").read()
        return next(ln for ln in limits.splitlines() if ln.startswith("Max address space"))

    # supervisord calls a program RUNNING after a second, perhaps before Python has loaded
    # the settings and set the limit; the limit is in place before the service itself runs.
    _wait(lambda: "unlimited" not in limit_line())
    assert str(700 * 1024 * 1024) in limit_line()
    assert "memory limit 700 MB" in control.log_tail(home, "send", 50)


def test_up_names_a_service_that_cannot_start(home):
    only_services(home, ("smtp",))
    set_setting(home, "smtp.max_connections", 5)
    # Occupy the SMTP port so the service cannot bind it.
    import socket

    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("0.0.0.0", home.port("smtp")))
    blocker.listen()
    try:
        with pytest.raises(control.ControlError) as err:
            control.up(home, timeout=60)
        assert "smtp" in str(err.value)
    finally:
        blocker.close()
        control.down(home)

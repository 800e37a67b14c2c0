"""The four Dovecot services under supervisord, through the node's service control layer
(what `mailyard up`, `mailyard service ...` and `mailyard status` call)."""

from __future__ import annotations

import os
import shutil
import signal
import socket

from mda_support import (
    DOMAIN,
    IMAP,
    IMAPS,
    PASSWORD,
    make_node,
    short_tmp,
    tls_context,
)

from mailyard.mda import master
from mailyard.mda.config import conf_path, paths
from mailyard.services import control
from mailyard.services.apply_settings import change_settings
from mailyard.settings.registry import SERVICE_NAMES
from mailyard.store.settings_store import set_many

MDA = ("pop3", "pop3s", "imap", "imaps")
UP_TIMEOUT = 120.0


def _states(home) -> dict[str, tuple[str, int | None]]:
    return {s.name: (s.state, s.pid) for s in control.status(home, with_versions=False)
            if s.name in MDA}


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def test_status_start_and_stop_of_the_four_services_under_supervisord():
    root = short_tmp("mda-sup")
    home = make_node(root, users=("alice",))
    set_many(home, {f"service.{n}.start_on_boot": n in MDA for n in SERVICE_NAMES})
    try:
        assert control.up(home, timeout=UP_TIMEOUT) == list(MDA)
        states = _states(home)
        assert {state for state, _ in states.values()} == {"RUNNING"}
        assert len({pid for _, pid in states.values()}) == 1  # one Dovecot serves all four
        versions = {s.version for s in control.status(home) if s.name in MDA}
        assert len(versions) == 1 and versions.pop().startswith("Dovecot 2.")

        control.stop(home, "imaps")
        states = _states(home)
        assert states["imaps"] == ("STOPPED", None)
        assert all(states[n][0] == "RUNNING" for n in ("pop3", "pop3s", "imap"))
        assert _refused(home.port("imaps"))
        client = IMAP(home.port("imap"))
        assert client.login(f"alice@{DOMAIN}", PASSWORD)[0] == "OK"
        client.logout()

        for name in ("pop3", "pop3s", "imap"):
            control.stop(home, name)
        assert all(state == "STOPPED" for state, _ in _states(home).values())
        assert all(_refused(home.port(n)) for n in MDA)

        control.start(home, "imaps")  # starts Dovecot again, with imaps alone listening
        control.wait_ready(home, ["imaps"], UP_TIMEOUT)
        states = _states(home)
        assert states["imaps"][0] == "RUNNING" and states["imap"] == ("STOPPED", None)
        assert _refused(home.port("imap"))
        client = IMAPS(home.port("imaps"), tls_context(home))
        assert client.login(f"alice@{DOMAIN}", PASSWORD)[0] == "OK"
        client.logout()

        result = change_settings(home, {"imaps.max_connections": 9})
        assert "imaps" in result.reloaded and not result.problems
        assert master.service_limits(conf_path(home))["imaps"] == (9, 1)
    finally:
        control.down(home)
        left = master.master_pid(paths(home).base_dir)
        if left is not None:  # supervisord failed to stop it: do not leave it behind
            os.kill(left, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)

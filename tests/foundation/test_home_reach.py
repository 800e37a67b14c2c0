"""A home the daemons cannot reach is refused at init and at up, naming path, user and fix;
setting values are checked as what they are (issue 16, item 3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from tests.conftest import VENV_BIN, free_port_base

from mailyard.delivery.resolve import make_resolver, parse_resolver_setting
from mailyard.home import Home
from mailyard.services import control
from mailyard.settings.registry import setting
from mailyard.settings.types import SettingError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="service users exist only as root")


@pytest.fixture
def closed_parent():
    base = Path(tempfile.mkdtemp(prefix="mailyard-closed-", dir="/tmp"))
    os.chmod(base, 0o700)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _mailyard(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    return subprocess.run([str(VENV_BIN / "mailyard"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


@needs_root
def test_init_below_a_closed_directory_is_refused_with_path_user_and_fix(closed_parent):
    done = _mailyard("--home", str(closed_parent / "node"), "init",
                     "--hostname", "mx.example.test", "--port-base", str(free_port_base()))
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(closed_parent) in done.stderr
    assert "clamav" in done.stderr and "mailyard" in done.stderr
    assert f"chmod o+x {closed_parent}" in done.stderr
    assert not (closed_parent / "node").exists()  # refused before anything was made


@needs_root
def test_up_refuses_a_home_a_service_user_can_no_longer_reach(home: Home):
    os.chmod(home.var_dir, 0o700)  # e.g. an administrator's chmod after init
    with pytest.raises(control.ControlError) as caught:
        control.up(home, timeout=30)
    message = str(caught.value)
    assert str(home.var_dir) in message and "clamav" in message
    assert not control.supervisor_running(home)


def test_init_in_a_reachable_directory_goes_on(tmp_path: Path):
    base = Path(tempfile.mkdtemp(prefix="mailyard-open-", dir="/tmp"))
    try:
        os.chmod(base, 0o711)
        done = _mailyard("--home", str(base / "node"), "init", "--hostname",
                         "mx.example.test", "--port-base", str(free_port_base()))
        assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- values as what they are -----------------------------------------------------------------

@pytest.mark.parametrize("value", ["127.0.0.1:5353", "::1:53:x", "999.1.1.1", "1.2.3.4@0",
                                   "1.2.3.4@65536", "1.2.3.4@", "fe80::1%eth0", "localhost"])
def test_a_resolver_that_is_no_address_is_refused(value: str):
    with pytest.raises(SettingError) as caught:
        setting("smtp.dns_resolver").parse(value)
    assert "smtp.dns_resolver" in str(caught.value) and value in str(caught.value)


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1@5353", "::1", "::1@5353",
                                   "2001:db8::53", ""])
def test_every_resolver_the_registry_accepts_is_usable(value: str):
    stored = setting("smtp.dns_resolver").parse(value)
    parsed = parse_resolver_setting(stored)  # what the send and SMTP services do at start
    if value:
        assert parsed is not None and 1 <= parsed[1] <= 65535
    make_resolver(stored)


def test_the_cli_refuses_a_colon_port_and_says_how_to_write_it(home: Home, cli_env):
    done = subprocess.run([str(VENV_BIN / "mailyard"), "settings", "set", "smtp.dns_resolver",
                           "127.0.0.1:5353"], capture_output=True, text=True, env=cli_env,
                          timeout=60)
    assert done.returncode != 0
    assert "127.0.0.1:5353" in done.stderr and "@5353" in done.stderr


@pytest.mark.parametrize("value", ["127.0.0.1:25", "1.2.3", "::g"])
def test_a_listen_address_that_is_no_address_is_refused(value: str):
    with pytest.raises(SettingError):
        setting("smtp.listen_address").parse(value)

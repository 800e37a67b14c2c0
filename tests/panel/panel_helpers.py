"""Helpers of the panel's tests: node homes with a running panel, signing in, screenshots."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect
from tests.conftest import VENV_BIN, free_port_base

from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.services import control
from mailyard.services.privileges import drop_privileges, running_as_root
from mailyard.settings.registry import SERVICE_NAMES
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_many

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "panel"
ADMIN = "tester"
ADMIN_PASSWORD = "correct horse battery staple"
# Generous: the panel is up in about a second; a loaded machine may take far longer.
START_TIMEOUT = 90.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class PanelNode:
    home: Home
    url: str
    token: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # Unix time just before the panel process was started

    def client(self, **kw: object) -> httpx.Client:
        """An HTTP client of the panel with no credentials."""
        return httpx.Client(base_url=self.url, verify=False, timeout=60, **kw)  # type: ignore[arg-type]

    def api(self) -> httpx.Client:
        """An HTTP client that sends the node's bearer token."""
        return self.client(headers={"Authorization": f"Bearer {self.token}"})


def make_home(root: Path) -> Home:
    """A fresh node home with the test admin and the domain example.test.

    The panel drops root for mailyard-panel, which must reach the home: as root it is made
    below /tmp (as tests/conftest.py's `home`) rather than in `root`, below pytest's 0700
    directory, whose mode other pytest sessions set back; removed when the tests end."""
    if os.geteuid() == 0:
        root = Path(tempfile.mkdtemp(prefix="mailyard-panel-", dir="/tmp"))
        os.chmod(root, 0o711)
        atexit.register(shutil.rmtree, root, True)
    home, _ = init_home(root / "node", "mx.example.test", port_base=free_port_base())
    accounts.add_admin(home, ADMIN, ADMIN_PASSWORD)
    return home


def panel_url(home: Home) -> str:
    return f"https://127.0.0.1:{home.port('panel')}"


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None,
               timeout: float = START_TIMEOUT, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log and log.exists() else ""
            raise RuntimeError(f"the panel exited with {proc.returncode}:\n{text[-3000:]}")
        try:
            if httpx.get(f"{url}/signin", verify=False, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the panel at {url} did not answer within {timeout:.0f} s")


# The root helper started beside each panel (by the panel process's pid), stopped with it.
_HELPERS: dict[int, subprocess.Popen[bytes]] = {}


def start_helper(home: Home) -> subprocess.Popen[bytes]:
    """The panel's root helper, as supervisord would start it; ready once its socket is."""
    from mailyard.services.helper import socket_path

    log = home.log_dir / "helper-test.log"
    path = socket_path(home)
    if path.exists():
        path.unlink()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "mailyard.services.run", "helper", "--home",
             str(home.root)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, MAILYARD_HOME=str(home.root)))
    deadline = time.monotonic() + START_TIMEOUT
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"the helper did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def start_panel(home: Home, url: str | None = None) -> subprocess.Popen[bytes]:
    """The panel, as supervisord would start it, in its own process group (ready once
    `url`, by default the panel's on 127.0.0.1, answers), with its root helper beside it."""
    helper = start_helper(home)
    log = home.log_dir / "panel-test.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "mailyard.services.run", "panel", "--home",
             str(home.root)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, MAILYARD_HOME=str(home.root)))
    _HELPERS[proc.pid] = helper
    try:
        wait_ready(url or panel_url(home), proc, log=log)
    except RuntimeError:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    helper = _HELPERS.pop(proc.pid, None)
    if helper is not None:
        stop_process(helper)
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


# ---- signing in with a plain HTTP client ---------------------------------------------------

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_SIGNIN_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def signin_form_token(client: httpx.Client) -> str:
    page = client.get("/signin")
    match = _SIGNIN_CSRF.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


def sign_in(node: PanelNode, username: str = ADMIN,
            password: str = ADMIN_PASSWORD) -> tuple[httpx.Client, str]:
    """A client with a signed-in session, and the session's CSRF token."""
    client = node.client()
    token = signin_form_token(client)
    done = client.post("/signin", data={"username": username, "password": password,
                                        "csrf_token": token, "next": "/mta"},
                       headers={"Origin": node.url})
    assert done.status_code == 303, done.text[:500]
    page = client.get("/mta")
    assert page.status_code == 200
    match = _CSRF_META.search(page.text)
    assert match
    return client, match.group(1)


# ---- the browser ---------------------------------------------------------------------------


def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/panel/ for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def give_store_to_mail_owner(home: Home) -> None:
    """The SMTP and send services drop root for the `mailyard` user and then read the store; an
    SQLite store and its directory must be theirs (as tests/smtp does; `mailyard init` does not
    do it yet). SQLite running as root gives its -wal and -shm files the store file's owner."""
    from mailyard.services.privileges import mail_owner, running_as_root

    if not running_as_root() or not home.db_url.startswith("sqlite"):
        return
    uid, gid = mail_owner()
    for parent in home.root.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o711)
    os.chown(home.root, uid, gid)
    for path in home.root.glob("store.sqlite*"):
        os.chown(path, uid, gid)


def as_mail_owner(work: Callable[[], Any]) -> Any:
    """work() in a child that has become the mail owner, as the node's services write the
    queue (the panel's helper reads it as the mail owner: files made by root would be
    unreadable to it). Its result must be JSON data."""
    if not running_as_root():
        return work()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(read_end)
            drop_privileges()
            os.write(write_end, json.dumps(work()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the work as the mail owner failed (see the output above)"
    return json.loads(data)


@contextmanager
def supervised_node(prefix: str, services: Iterable[str],
                    prepare: Callable[[Home], None] = lambda home: None) -> Iterator[Home]:
    """A node home under /tmp, open to the services' own users (pytest's temporary root is
    0700), prepared by `prepare`, with only `services` started by the real supervisor; stopped
    and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o711)
    home = make_home(base)
    prepare(home)
    wanted = set(services)
    set_many(home, {f"service.{name}.start_on_boot": name in wanted for name in SERVICE_NAMES})
    dispose_all()
    give_store_to_mail_owner(home)
    try:
        control.up(home, timeout=180)
        yield home
    finally:
        control.down(home)
        dispose_all()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def signed_in_tab(browser: Any, home: Home, path: str, wait_ms: int) -> Iterator[Any]:
    """A Chromium tab signed in to the panel as the test administrator, on page `path`."""
    context = browser.new_context(ignore_https_errors=True,
                                  viewport={"width": 1400, "height": 900})
    context.set_default_timeout(wait_ms)
    tab = context.new_page()
    tab.goto(panel_url(home) + f"/signin?next={path}")
    tab.fill("#username", ADMIN)
    tab.fill("#password", ADMIN_PASSWORD)
    tab.click("button[type=submit]")
    expect(tab).to_have_url(panel_url(home) + path)
    try:
        yield tab
    finally:
        context.close()

"""The panel runs as mailyard-panel on a real, supervised node, and still does its work through
the root helper (issue 16, item 9): settings that reload Dovecot, service restarts, queue
deletes through the running send service, new mailboxes, TLS certificates. The helper and
supervisor sockets are the panel's group's only, and the helper refuses what is not on its
list."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from panel_helpers import panel_url
from tests.conftest import free_port, free_port_base
from tests.integration.conftest import only_services

from mailyard.home import Home
from mailyard.mda import master
from mailyard.mda.config import conf_path
from mailyard.nodeinit import init_home
from mailyard.panel.tokens import create_token
from mailyard.queue import Envelope, Queue
from mailyard.services import control, helper, supervisor_conf
from mailyard.services.privileges import MAIL_USER, PANEL_USER
from mailyard.services.tls import make_self_signed
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_many

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the panel drops to "
                                "mailyard-panel only when started as root")

SERVICES = ("send", "imap", "panel")
WAIT_SECONDS = 60.0


class Node:
    def __init__(self, home: Home, token: str) -> None:
        self.home, self.token = home, token

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=panel_url(self.home), verify=False, timeout=120,
                            headers={"Authorization": f"Bearer {self.token}"})

    def pid(self, service: str) -> int:
        states = {s.name: s for s in control.status(self.home, with_versions=False)}
        pid = states[service].pid
        assert pid, f"{service} is not running: {states[service]}"
        return pid


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A supervised node (send, Dovecot's imap, the panel and its helper) whose send service
    routes far.test to a closed loopback port, so a message for it waits in the queue."""
    base = Path(tempfile.mkdtemp(prefix="mailyard-panelpriv-", dir="/tmp"))
    os.chmod(base, 0o711)
    home, _ = init_home(base / "node", "mx.example.test", port_base=free_port_base())
    accounts.add_domain(home, "example.test")
    only_services(home, SERVICES)
    set_many(home, {"send.smtp_routes": [f"far.test:127.0.0.1:{free_port()}"]})
    token = create_token(home, "privileges")
    dispose_all()
    try:
        control.up(home, timeout=120)
        yield Node(home, token)
    finally:
        control.down(home)
        dispose_all()
        shutil.rmtree(base, ignore_errors=True)


def _ids(pid: int, field: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _wait(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


# ---- who the panel is ---------------------------------------------------------------------------

def test_the_panel_process_runs_as_mailyard_panel(node: Node) -> None:
    panel = pwd.getpwnam(PANEL_USER)
    pid = node.pid("panel")
    assert _ids(pid, "Uid") == [panel.pw_uid] * 4  # real, effective, saved, filesystem
    assert _ids(pid, "Gid") == [panel.pw_gid] * 4
    store = grp.getgrnam("mailyard-store").gr_gid
    assert store in _ids(pid, "Groups")
    assert 0 not in _ids(pid, "Groups")


def test_the_panel_reads_the_services_states_through_the_supervisor(node: Node) -> None:
    with node.api() as api:
        states = {s["name"]: s["state"] for s in api.get("/api/v1/services").json()}
    assert states["send"] == states["imap"] == states["panel"] == "RUNNING"


# ---- what the panel can still do ---------------------------------------------------------------

def test_a_setting_that_reloads_dovecot(node: Node) -> None:
    with node.api() as api:
        done = api.put("/api/v1/settings/imap.max_connections", json={"value": 7})
    assert done.status_code == 200, done.text
    assert "imap" in done.json()["reloaded"] and not done.json()["problems"]
    assert master.service_limits(conf_path(node.home))["imap"][0] == 7


def test_restarting_a_service(node: Node) -> None:
    before = node.pid("send")
    with node.api() as api:
        done = api.post("/api/v1/services/send/restart")
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "RUNNING"
    assert node.pid("send") != before


def test_the_panel_still_refuses_to_stop_itself(node: Node) -> None:
    with node.api() as api:
        assert api.post("/api/v1/services/panel/stop").status_code == 409


def test_deleting_a_queued_message_through_the_running_send_service(node: Node) -> None:
    queue = Queue(node.home.queue_dir)
    with queue.open_message() as w:  # as a local program would
        w.write(b"Subject: waiting\n\nbody\n")
        qid = w.commit(Envelope(sender="a@example.net", recipients=["b@far.test"]))
    with node.api() as api:
        _wait(lambda: any(m["id"] == qid for m in api.get("/api/v1/queue/messages").json()),
              "the message is not listed")
        done = api.delete(f"/api/v1/queue/messages/{qid}")
        assert done.status_code == 200, done.text
        assert done.json()["result"]["via"] == "service"  # send holds the queue's lock
        assert api.get(f"/api/v1/queue/messages/{qid}").status_code == 404
        assert api.delete("/api/v1/queue/messages/99999999").status_code == 404


def test_adding_a_mailbox_makes_its_maildir_as_the_mail_owner(node: Node) -> None:
    with node.api() as api:
        done = api.post("/api/v1/mailboxes", json={"address": "new@example.test",
                                                   "password": "a long password here"})
    assert done.status_code == 201, done.text
    maildir = node.home.maildir("new@example.test")
    owner = pwd.getpwnam(MAIL_USER).pw_uid
    for place in (maildir, maildir / "new", maildir / "cur", maildir / "tmp"):
        assert place.is_dir() and place.stat().st_uid == owner, place


def test_installing_a_tls_certificate(node: Node, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, "mx.example.test")
    with node.api() as api:
        done = api.post("/api/v1/tls", json={"cert_pem": cert.read_text(),
                                             "key_pem": key.read_text()})
        assert done.status_code == 201, done.text
        assert done.json()["names"] == ["mx.example.test"]
        listed = api.get("/api/v1/tls").json()
        refused = api.post("/api/v1/tls", json={"cert_pem": cert.read_text(),
                                                "key_pem": "not a key"})
    assert node.home.cert_file.read_bytes() == cert.read_bytes()
    installed = node.home.key_file.stat()
    assert stat.S_IMODE(installed.st_mode) == 0o600 and installed.st_uid == 0
    assert [c["name"] for c in listed] == ["node"]
    assert refused.status_code == 422 and "nothing installed" in refused.json()["reason"]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _worker(node: Node) -> int:
    """The helper's one child that has become the mail owner (its long-lived worker)."""
    owner = pwd.getpwnam(MAIL_USER).pw_uid
    helper_pid = int(control.rpc(node.home).supervisor.getProcessInfo("helper")["pid"])
    found = [c for c in _children(helper_pid) if _ids(c, "Uid") == [owner] * 4]
    assert len(found) == 1, f"the helper's children: {_children(helper_pid)}"
    return found[0]


def _ended(pid: int) -> bool:
    try:
        return "\tZ" in Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1][:4]
    except FileNotFoundError:
        return True


def test_the_browser_trail_usage_and_limits_are_read_by_the_mail_owners_worker(
        node: Node) -> None:
    """What mailyard-panel cannot read (the queue, the logs, the Maildirs, var/limits) the
    helper's worker reads as the mail owner, and the same worker serves every request."""
    queue = Queue(node.home.queue_dir)
    with queue.open_message() as w:
        w.write(b"Subject: browsed\n\nbody\n")
        qid = w.commit(Envelope(sender="browse@example.net", recipients=["c@far.test"]))
    with node.api() as api:
        made = api.post("/api/v1/mailboxes", json={"address": "used@example.test",
                                                   "password": "a long password here"})
        assert made.status_code == 201, made.text
        worker = _worker(node)

        def listed() -> bool:
            page = api.get("/api/v1/queue/browse", params={"sender": "browse@"})
            assert page.status_code == 200, page.text
            return [m["id"] for m in page.json()["messages"]] == [qid]
        _wait(listed, "the browser does not list the message")

        def trailed() -> bool:  # send's log (0640, the mail owner's group) names it
            found = api.get("/api/v1/trail", params={"q": qid})
            assert found.status_code == 200, found.text
            return bool(found.json()["messages"])
        _wait(trailed, "the trail does not show the message from the send log")
        held = api.post("/api/v1/queue/actions", json={"action": "hold", "ids": [qid],
                                                       "reason": "look at it"})
        assert held.status_code == 200, held.text
        assert held.json()["ids"] == [qid] and held.json()["done"] is True
        page = api.get("/api/v1/queue/browse", params={"held": True}).json()
        assert [(m["id"], m["hold_reason"]) for m in page["messages"]] == [(qid, "look at it")]
        box = api.get("/api/v1/mailboxes/used@example.test").json()
        assert box["used_bytes"] == 0, box  # read, and empty (null: not readable)
        limits = api.get("/api/v1/limits")
        assert limits.status_code == 200, limits.text
        api.post("/api/v1/queue/actions", json={"action": "delete", "ids": [qid]})
    assert _worker(node) == worker  # one worker for all of it: its listing cache stays
    os.kill(worker, signal.SIGKILL)  # a worker that dies is replaced at the next request
    _wait(lambda: _ended(worker), "the killed worker did not end")
    with node.api() as api:
        page = api.get("/api/v1/queue/browse")
        assert page.status_code == 200, page.text
    assert _worker(node) != worker


# ---- the helper's list, and who reaches the sockets ---------------------------------------------

def _ask(home: Home, raw: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(helper.socket_path(home)))
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


@pytest.mark.parametrize(("raw", "words"), [
    (b'{"request": "shell", "args": {"cmd": "id"}}\n', "unknown request 'shell'"),
    (b'{"request": "service", "args": {"action": "start", "name": "../../bin/sh"}}\n',
     "no service named"),
    (b'{"request": "service", "args": {"action": "kill", "name": "send"}}\n',
     "unknown action 'kill'"),
    (b'{"request": "make-maildir", "args": {"address": "../../etc@x"}}\n',
     "not a mailbox address"),
    (b'{"request": "queue", "args": {"action": "delete", "id": "1/../../x"}}\n',
     "not a queue id"),
    (b'{"request": "apply-settings", "args": {"keys": ["no.such.key"]}}\n',
     "is not a setting key"),
    (b'{"request": "tls-install", "args": {"cert_pem": "x", "key_pem": "y", "path": "/"}}\n',
     "unknown argument 'path'"),
    (b'not json\n', "one line of JSON"),
])
def test_the_helper_refuses_what_is_not_on_its_list(node: Node, raw: bytes, words: str) -> None:
    answer = _ask(node.home, raw)
    assert answer["ok"] is False and answer["refused"] is True
    assert words in str(answer["error"])


def test_the_helper_refuses_a_mailbox_that_is_not_in_the_store(node: Node) -> None:
    with pytest.raises(helper.HelperRefused, match="no mailbox"):
        helper.call(node.home, "make-maildir", address="ghost@example.test")
    assert not node.home.maildir("ghost@example.test").exists()


def test_the_sockets_belong_to_root_and_the_panels_group(node: Node) -> None:
    for path, mode in ((helper.socket_path(node.home), 0o660),
                       (supervisor_conf.socket_path(node.home), 0o770)):
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode), path
        assert stat.S_IMODE(st.st_mode) == mode, (path, oct(st.st_mode))
        assert st.st_uid == 0 and grp.getgrgid(st.st_gid).gr_name == PANEL_USER, path


CONNECT = ("import socket, sys\n"
           "s = socket.socket(socket.AF_UNIX)\n"
           "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n")


@pytest.mark.parametrize("which", ["helper", "supervisor"])
def test_a_plain_local_user_cannot_connect(node: Node, which: str) -> None:
    path = (helper.socket_path(node.home) if which == "helper"
            else supervisor_conf.socket_path(node.home))
    as_nobody = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", CONNECT,
                                str(path)], capture_output=True, text=True, timeout=60)
    assert as_nobody.returncode == 13, as_nobody.stderr
    # the panel's user can: the same check is no check of the path alone
    as_panel = subprocess.run(["runuser", "-u", PANEL_USER, "--", sys.executable, "-c",
                               CONNECT, str(path)], capture_output=True, text=True, timeout=60)
    assert as_panel.returncode == 0, as_panel.stderr


def test_the_store_is_the_store_groups_and_no_one_elses(node: Node) -> None:
    store = node.home.root / "db" / "store.sqlite"
    for user, allowed in ((PANEL_USER, True), (MAIL_USER, True), ("nobody", False)):
        done = subprocess.run(["runuser", "-u", user, "--", "test", "-r", str(store)],
                              timeout=60)
        assert (done.returncode == 0) is allowed, user

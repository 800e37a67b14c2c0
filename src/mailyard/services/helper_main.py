"""The root helper's server: the `helper` program, serving services/helper.py's requests.

It listens on HOME/run/helper.sock, 0660 root:mailyard-panel, and also checks each caller's
uid (SO_PEERCRED): root, the panel's user, or (run as an ordinary user) that user. One
request at a time, in order: the panel's actions are few and a person waits for each, and
one at a time means two restarts of the same service never overlap.

Work on the mail owner's files (a Maildir, the queue) is done in a child process that drops
to the mail owner first, so root never writes in the mail owner's directories; the rest
(configs in root's etc/, signals, the supervisor, TLS keys in root's tls/) runs as root
through the same service-layer functions the CLI uses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from .. import usage
from ..home import Home
from ..mailboxes import ensure_maildir
from ..queue import admin as queue_admin
from ..queue import select as queue_select
from ..queue.errors import QueueError
from ..store import accounts
from ..store.db import forget_engines_after_fork
from ..store.settings_store import load_settings
from . import certificates, control
from .apply_settings import apply_keys
from .helper import (
    ANSWER_WAIT_SECONDS,
    MAX_REQUEST_BYTES,
    REQUEST_READ_SECONDS,
    HelperRefused,
    check,
    decode,
    socket_path,
)
from .privileges import drop_privileges, panel_owner, running_as_root
from .run import load

SOCKET_MODE = 0o660
LISTEN_BACKLOG = 16
# The answer of a child that works as the mail owner is read through a pipe: bounded like
# the answers themselves.
MAX_CHILD_ANSWER_BYTES = 64 * 1024 * 1024


def _log(text: str) -> None:
    print(f"helper: {text}", file=sys.stderr, flush=True)


# ---- carrying out requests ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Dataclasses and tuples as JSON data."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _work_answer(home: Home, work: Callable[..., Any], args: tuple[Any, ...]) -> dict[str, Any]:
    """work(home, *args) as an answer (in a process that is the mail owner already)."""
    try:
        return {"ok": True, "result": _plain(work(home, *args))}
    except HelperRefused as exc:
        return {"ok": False, "error": str(exc), "refused": True}
    except (QueueError, accounts.AccountError) as exc:
        # the caller's mistake (no such message, a bad address): a refusal
        refused = not getattr(exc, "temporary", False)
        return {"ok": False, "error": str(exc), "refused": refused}
    except (OSError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}


def _result(answer: dict[str, Any]) -> Any:
    if not answer:
        raise RuntimeError("the work as the mail owner failed; see the helper's log")
    if not answer.get("ok"):
        raise (HelperRefused if answer.get("refused") else RuntimeError)(
            answer.get("error") or "failed")
    return answer["result"]


class MailOwnerWorker:
    """One long-lived child that has become the mail owner and does the reading work of the
    queue browser, the trail, usage and the rate counters, one request at a time.

    Long-lived so that what it learns stays: queue/listing.py keeps each message's envelope
    summary in its process, and a child forked per request would throw that away each time
    (every page of the browser would read every envelope again). The parent (root) never
    reads the mail owner's files itself. Requests go down a socket pair as JSON lines; a
    worker that died is started again at the next request."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.pid = 0
        self.sock: socket.socket | None = None
        self.reader: Any = None

    def start(self, inherited: list[socket.socket]) -> None:
        """Fork the worker; `inherited` are the parent's sockets the child must close (the
        listening socket, a caller's connection: kept open, a caller would never see the
        end of its answer)."""
        self.stop()
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                parent_end.close()
                for other in inherited:
                    other.close()
                forget_engines_after_fork()
                drop_privileges()
                self._serve(child_end)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        child_end.close()
        parent_end.settimeout(ANSWER_WAIT_SECONDS)  # a worker that hangs is replaced
        self.pid, self.sock = pid, parent_end
        self.reader = parent_end.makefile("rb")

    def _serve(self, conn: socket.socket) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        lines = conn.makefile("rb")
        while True:
            line = lines.readline(MAX_REQUEST_BYTES + 1)
            if not line:
                return  # the helper has gone
            name, args = json.loads(line)
            try:
                answer = _work_answer(self.home, MAIL_OWNER_WORK[name], (args,))
            except Exception as exc:  # a bug of one request: say so, keep the worker's cache
                traceback.print_exc()
                answer = {"ok": False, "error": str(exc) or type(exc).__name__}
            conn.sendall(json.dumps(answer).encode() + b"\n")

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.reader.close()
            self.sock = self.reader = None
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
                os.waitpid(self.pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass
            self.pid = 0

    def _gone(self) -> bool:
        """Whether the worker has ended (it is reaped then)."""
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == self.pid
        except ChildProcessError:
            return True

    def ask(self, name: str, args: dict[str, Any], inherited: list[socket.socket]) -> Any:
        if self.sock is None or self._gone():
            if self.sock is not None:
                _log("the mail owner's worker had ended; starting another")
                self.pid = 0
            self.start(inherited)
        assert self.sock is not None
        try:
            self.sock.sendall(json.dumps([name, args]).encode() + b"\n")
            line = self.reader.readline(MAX_CHILD_ANSWER_BYTES + 1)
        except OSError:
            line = b""
        try:
            answer = json.loads(line) if line.endswith(b"\n") else {}
        except ValueError:
            answer = {}
        if not answer:  # died, or said something else: a fresh one next time
            _log(f"the mail owner's worker ended during {name}; starting another")
            self.stop()
        return _result(answer)


def _make_maildir(home: Home, args: dict[str, Any]) -> dict[str, Any]:
    """With the settings read now, so that the long-running helper follows mail.root."""
    settings = load_settings(home)
    home.use_settings(settings)
    return {"maildir": str(ensure_maildir(home, args["address"],
                                          bool(settings["spam.bayes_imap_training"])))}


def _queue_work(home: Home, args: dict[str, Any]) -> Any:
    action = args["action"]
    if action == "delete":
        return queue_admin.delete(home, args["id"])
    if action == "purge":
        return queue_admin.purge(home, args["which"])
    if action == "process":
        return queue_admin.process(home)
    if action == "test-message":
        return queue_admin.send_test(home, args["to"], args["subject"], args["body"])
    if action == "list":
        return [_plain(m) for m in queue_admin.list_messages(home, args["which"])]
    if action == "show":
        return _plain(queue_admin.show(home, args["id"]))
    if action == "browse":
        return _plain(queue_admin.page(home, queue_select.make_filter(**args["filter"]),
                                       args["offset"], args["limit"]))
    if action == "act":
        chosen = None if args["filter"] is None else queue_select.make_filter(**args["filter"])
        return queue_admin.act(home, args["operation"], args["ids"], chosen, args["reason"])
    return queue_admin.stats(home)


# The trail and the rate counters belong to layers above this one (the delivery trail at the
# top, smtp among the parts): reached by name, as the catalog reaches the services it starts.
TRAIL_QUERY = "mailyard.trail:query_of"
TRAIL_FIND = "mailyard.trail_logs:trail"
LIMITS_REPORT = "mailyard.smtp.ratereport:report"
LIMITS_JSON = "mailyard.smtp.ratereport:as_json"
RATE_TABLE = "mailyard.smtp.ratetable:RateTable"
RATES_PREPARE = "mailyard.smtp.ratetable:prepare"
RATES_DIR = "mailyard.smtp.ratetable:LIMITS_DIR"


def _trail(home: Home, args: dict[str, Any]) -> dict[str, Any]:
    """What the logs say of q (logs are 0640, readable by the mail owner's group)."""
    try:
        query = load(TRAIL_QUERY)(args["q"])
    except ValueError as exc:  # TrailError: not an address, Message-ID or queue id
        raise HelperRefused(f"trail: {exc}") from None
    found = load(TRAIL_FIND)(home.log_dir, query, args["since"])
    result: dict[str, Any] = found.to_json(args["limit"])
    return result


def _usage(home: Home, args: dict[str, Any]) -> Any:
    """Each mailbox's use of its quota (of one domain), or one mailbox's (None: no such)."""
    if args["address"] is not None:
        return usage.mailbox(home, args["address"])
    return usage.mailboxes(home, args["domain"])


def _limits(home: Home, args: dict[str, Any]) -> Any:
    """The rate report (as `mailyard limits --json`), or the refusals of the last hour as
    [key, when, rule, limit, count] for the panel's warnings."""
    if args["part"] == "report":
        return load(LIMITS_JSON)(*load(LIMITS_REPORT)(home))
    with load(RATE_TABLE)(home) as table:
        _counts, over = table.report()
    return [[key, *row] for key, row in sorted(over.items())]


# What the mail owner's worker does, by request name.
MAIL_OWNER_WORK: dict[str, Callable[[Home, dict[str, Any]], Any]] = {
    "make-maildir": _make_maildir,
    "queue": _queue_work,
    "trail": _trail,
    "usage": _usage,
    "limits": _limits,
}


def _service(home: Home, action: str, name: str) -> dict[str, Any]:
    getattr(control, action)(home, name)
    return {"name": name, "action": action}


def _tls_install(home: Home, args: dict[str, Any]) -> dict[str, Any]:
    domain = args["domain"]
    names = [domain] if domain else [str(load_settings(home)["server.hostname"])]
    try:
        warnings = certificates.install(home.tls_dir, args["cert_pem"].encode(),
                                        args["key_pem"].encode(), names, domain)
    except certificates.CertificateError as exc:
        raise HelperRefused(f"certificate refused, nothing installed: {exc}") from None
    return {"names": names, "warnings": warnings}


# SpamAssassin is an optional part of a node: reached by name, as the catalog reaches it.
SPAMD_RENDER = "mailyard.filters.spamd:render"


def _spam_render(home: Home, global_changed: bool) -> dict[str, Any]:
    """spamd's files from the store (site config in root's etc/, user_prefs written without
    following links), and a reload of a running spamd when global preferences changed."""
    try:
        render = load(SPAMD_RENDER)
    except ImportError:
        raise HelperRefused("spam-render: SpamAssassin is not part of this node") from None
    render(home)
    reloaded = bool(global_changed and control.supervisor_running(home))
    if reloaded:
        control.reload(home, "spamd")
    return {"reloaded": reloaded}


# The worker of the running helper, and the sockets its child must not keep (set by `run`).
_WORKER: MailOwnerWorker | None = None
_INHERITED: list[socket.socket] = []


def as_mail_owner(home: Home, name: str, args: dict[str, Any]) -> Any:
    """MAIL_OWNER_WORK[name](home, args) in the mail owner's worker."""
    global _WORKER
    if _WORKER is None:
        _WORKER = MailOwnerWorker(home)
    return _WORKER.ask(name, args, _INHERITED)


def carry_out(home: Home, name: str, args: dict[str, Any]) -> Any:
    """Do one checked request (see services/helper.py for the list)."""
    if name == "apply-settings":
        reloaded, restarted, problems = apply_keys(home, args["keys"],
                                                   frozenset(args["unchanged"]))
        return {"reloaded": reloaded, "restarted": restarted, "problems": problems}
    if name == "service":
        return _service(home, args["action"], args["name"])
    if name == "make-maildir":
        if accounts.get_mailbox(home, args["address"]) is None:
            raise HelperRefused(f"make-maildir: no mailbox {args['address']} in the store")
        return as_mail_owner(home, name, args)
    if name == "limits" and not (home.root / str(load(RATES_DIR))).is_dir():
        # No service has counted yet; HOME/var is root's, so the directory is made here for
        # the mail owner, as a sending service makes it before it drops root.
        load(RATES_PREPARE)(home)
    if name in MAIL_OWNER_WORK:
        return as_mail_owner(home, name, args)
    if name == "tls-install":
        return _tls_install(home, args)
    if name == "status":  # Dovecot's state is read from its master's pid file, root's
        return [s.as_dict() for s in control.status(home, args["with_versions"])]
    if name == "spam-render":
        return _spam_render(home, args["global_changed"])
    if name == "tls-list":
        return [_plain(c) for c in certificates.installed(home.tls_dir)]
    raise HelperRefused(f"unknown request {name!r}")  # check() lets none through


# ---- the socket ---------------------------------------------------------------------------------


def _allowed_uids() -> set[int]:
    return {0, os.getuid(), panel_owner()[0]}


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _read_line(conn: socket.socket) -> bytes:
    conn.settimeout(REQUEST_READ_SECONDS)
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise HelperRefused(f"a request is at most {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0]


def answer(home: Home, line: bytes) -> dict[str, Any]:
    """The answer to one request line (refusals and failures included)."""
    try:
        name, args = check(decode(line))
    except HelperRefused as exc:
        return {"ok": False, "refused": True, "error": str(exc)}
    try:
        return {"ok": True, "result": carry_out(home, name, args)}
    except HelperRefused as exc:
        return {"ok": False, "refused": True, "error": str(exc)}
    except Exception as exc:  # the request failed: say why, keep serving
        return {"ok": False, "refused": False, "error": str(exc) or type(exc).__name__}


def serve_one(home: Home, conn: socket.socket, allowed: set[int]) -> None:
    uid = _peer_uid(conn)
    if uid not in allowed:
        _log(f"refused a caller with uid {uid}")
        return
    line = b""
    try:
        line = _read_line(conn)
    except HelperRefused as exc:
        reply: dict[str, Any] = {"ok": False, "refused": True, "error": str(exc)}
    except TimeoutError:
        _log(f"uid {uid} sent no request within {REQUEST_READ_SECONDS:.0f} s")
        return
    else:
        reply = answer(home, line)
    what = line[:60].decode("utf-8", "replace")
    _log(f"uid {uid}: {'done' if reply['ok'] else 'refused' if reply.get('refused') else 'failed'}"
         f" {what!r}" + ("" if reply["ok"] else f": {reply['error']}"))
    conn.settimeout(REQUEST_READ_SECONDS)
    conn.sendall(json.dumps(reply).encode() + b"\n")


def listen(home: Home) -> socket.socket:
    """Bind HOME/run/helper.sock (run/ is root's: no one else can put a link there)."""
    path = socket_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket() or path.is_symlink():
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no moment at which others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    if running_as_root():
        os.chown(path, 0, panel_owner()[1], follow_symlinks=False)
    os.chmod(path, SOCKET_MODE)
    sock.listen(LISTEN_BACKLOG)
    return sock


def run(home: Home) -> None:
    """Serve until SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    global _WORKER
    sock = listen(home)
    allowed = _allowed_uids()
    _INHERITED[:] = [sock]
    _WORKER = MailOwnerWorker(home)
    _WORKER.start(_INHERITED)
    _log(f"listening on {socket_path(home)}")
    try:
        while True:
            conn, _ = sock.accept()
            _INHERITED.append(conn)
            with conn:
                try:
                    serve_one(home, conn, allowed)
                except OSError as exc:
                    _log(f"connection lost: {exc}")
                finally:
                    _INHERITED.remove(conn)
    finally:
        _WORKER.stop()
        sock.close()


def version() -> str:
    try:
        return f"mailyard helper {package_version('mailyard')}"
    except PackageNotFoundError:
        return "mailyard helper (not installed)"

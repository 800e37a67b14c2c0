"""The root helper's protocol: the fixed list of requests the panel may make, and the client.

The panel runs as `mailyard-panel` (issue 16, item 9). What it cannot do with its own rights
(render daemon configs into root's directories, signal root's and the mail owner's processes,
install TLS keys, create Maildirs, change the queue) it asks of `helper`, a small supervised
program that runs as root and listens on HOME/run/helper.sock (0660 root:mailyard-panel).

One request per connection: a JSON object on one line, `{"request": NAME, "args": {...}}`,
answered by one JSON line, `{"ok": true, "result": ...}` or `{"ok": false, "error": TEXT,
"refused": BOOL}`. Every argument is checked here (`check`) before anything runs: names come
from the catalog and the registry, never a path from the caller; anything else is refused
with what was wrong and what is allowed. The checks are pure functions, so they are tested
without a socket.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..home import Home
from ..queue import admin
from ..settings.registry import REGISTRY
from . import control
from .apply_settings import apply_keys
from .catalog import SERVICES
from .control import ServiceStatus

SOCKET_NAME = "helper.sock"
# A request is a few names, or a certificate chain with its key (a long chain of four RSA-4096
# certificates is about 10 kB in PEM); 256 kB leaves room and bounds what a caller can make
# the helper hold.
MAX_REQUEST_BYTES = 256 * 1024
# An answer: a queue listing is the biggest thing sent back (the panel lists at most what
# queue.admin lists). Bounded so that a broken helper cannot make the panel hold gigabytes.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# The caller has this long to send its request line (as Postfix's ipc_timeout bounds a
# local exchange); a client that connects and says nothing cannot hold the helper.
REQUEST_READ_SECONDS = 10.0
# What the panel waits for an answer: a restart waits for the service to come back
# (clamd loads its signatures in 20 s or more), a Dovecot reload for its listeners.
ANSWER_WAIT_SECONDS = 180.0

SERVICE_ACTIONS = ("start", "stop", "restart", "reload")
QUEUE_ACTIONS = ("delete", "purge", "process", "test-message", "list", "show", "stats")
QUEUE_CHOICES = ("remote", "local", "todo", "all")
# Programs the helper will not stop or restart for the panel: the panel itself (it would cut
# off the request that asked) and the helper (nothing could start it again from the panel).
NOT_FROM_PANEL = ("panel", "helper")
MAX_ADDRESS_LENGTH = 320  # RFC 5321 4.5.3.1: local part 64 + @ + domain 255
MAX_SUBJECT_LENGTH = 200
MAX_BODY_LENGTH = 100_000
_QUEUE_ID = re.compile(r"[0-9]{1,20}")
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")


class HelperError(RuntimeError):
    """The helper could not do what was asked; the message says why."""


class HelperRefused(HelperError):
    """A request or argument the helper does not accept; the message names it and what is
    allowed."""


class HelperUnavailable(HelperError):
    """No helper answers on the node's socket (the node is not running)."""


def socket_path(home: Home) -> Path:
    return home.run_dir / SOCKET_NAME


# ---- checking requests (pure) ----------------------------------------------------------------


def _only(args: dict[str, Any], request: str, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(args) - set(allowed))
    if extra:
        raise HelperRefused(f"{request}: unknown argument {extra[0]!r}; allowed: "
                            f"{', '.join(allowed) or 'none'}")


def _text(args: dict[str, Any], request: str, name: str, limit: int,
          required: bool = True) -> str:
    value: object = args.get(name, "" if not required else None)
    if not isinstance(value, str):
        raise HelperRefused(f"{request}: argument {name!r} must be text")
    if required and not value:
        raise HelperRefused(f"{request}: argument {name!r} may not be empty")
    if len(value) > limit:
        raise HelperRefused(f"{request}: argument {name!r} is longer than {limit} characters")
    if "\x00" in value:
        raise HelperRefused(f"{request}: argument {name!r} contains a NUL character")
    return value


def _keys(args: dict[str, Any], request: str, name: str) -> list[str]:
    value = args.get(name, [])
    if not isinstance(value, list) or len(value) > len(REGISTRY):
        raise HelperRefused(f"{request}: argument {name!r} must be a list of setting keys")
    for key in value:
        if not isinstance(key, str) or key not in REGISTRY:
            raise HelperRefused(f"{request}: {key!r} is not a setting key "
                                "(`mailyard settings list` names them)")
    return list(dict.fromkeys(value))


def _check_apply(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "apply-settings", ("keys", "unchanged"))
    keys = _keys(args, "apply-settings", "keys")
    unchanged = _keys(args, "apply-settings", "unchanged")
    if not set(unchanged) <= set(keys):
        raise HelperRefused("apply-settings: 'unchanged' may only name keys in 'keys'")
    return {"keys": keys, "unchanged": unchanged}


def _check_service(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "service", ("action", "name"))
    action = _text(args, "service", "action", 16)
    name = _text(args, "service", "name", 32)
    if action not in SERVICE_ACTIONS:
        raise HelperRefused(f"service: unknown action {action!r}; allowed: "
                            f"{', '.join(SERVICE_ACTIONS)}")
    if name not in SERVICES:
        raise HelperRefused(f"service: no service named {name!r}; services are: "
                            f"{', '.join(SERVICES)}")
    if name in NOT_FROM_PANEL and action in ("stop", "restart"):
        done = {"stop": "stopped", "restart": "restarted"}[action]
        raise HelperRefused(f"service: {name} cannot be {done} from the panel; use "
                            f"`mailyard service {action} {name}` on the node")
    return {"action": action, "name": name}


def _check_address(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "make-maildir", ("address",))
    address = _text(args, "make-maildir", "address", MAX_ADDRESS_LENGTH).strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or "/" in address or not _DOMAIN.fullmatch(domain):
        raise HelperRefused(f"make-maildir: {address!r} is not a mailbox address "
                            "(local@domain)")
    return {"address": address}


def _check_queue(args: dict[str, Any]) -> dict[str, Any]:
    action = _text(args, "queue", "action", 16)
    if action not in QUEUE_ACTIONS:
        raise HelperRefused(f"queue: unknown action {action!r}; allowed: "
                            f"{', '.join(QUEUE_ACTIONS)}")
    if action in ("delete", "show"):
        _only(args, "queue", ("action", "id"))
        qid = _text(args, "queue", "id", 20)
        if not _QUEUE_ID.fullmatch(qid):
            raise HelperRefused(f"queue: {qid!r} is not a queue id (digits only)")
        return {"action": action, "id": qid}
    if action in ("purge", "list"):
        _only(args, "queue", ("action", "which"))
        which = _text(args, "queue", "which", 16)
        if which not in QUEUE_CHOICES:
            raise HelperRefused(f"queue: unknown queue {which!r}; allowed: "
                                f"{', '.join(QUEUE_CHOICES)}")
        return {"action": action, "which": which}
    if action == "test-message":
        _only(args, "queue", ("action", "to", "subject", "body"))
        return {"action": action, "to": _text(args, "queue", "to", MAX_ADDRESS_LENGTH),
                "subject": _text(args, "queue", "subject", MAX_SUBJECT_LENGTH),
                "body": _text(args, "queue", "body", MAX_BODY_LENGTH, required=False)}
    _only(args, "queue", ("action",))
    return {"action": action}


def _check_tls(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "tls-install", ("cert_pem", "key_pem", "domain"))
    cert = _text(args, "tls-install", "cert_pem", MAX_REQUEST_BYTES)
    key = _text(args, "tls-install", "key_pem", MAX_REQUEST_BYTES)
    domain = _text(args, "tls-install", "domain", 253, required=False).strip().lower()
    if domain and not _DOMAIN.fullmatch(domain):
        raise HelperRefused(f"tls-install: {domain!r} is not a domain name")
    return {"cert_pem": cert, "key_pem": key, "domain": domain or None}


def _check_spam_render(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "spam-render", ("global_changed",))
    value = args.get("global_changed", False)
    if not isinstance(value, bool):
        raise HelperRefused("spam-render: argument 'global_changed' must be true or false")
    return {"global_changed": value}


def _check_status(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "status", ("with_versions",))
    value = args.get("with_versions", True)
    if not isinstance(value, bool):
        raise HelperRefused("status: argument 'with_versions' must be true or false")
    return {"with_versions": value}


def _check_none(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "tls-list", ())
    return {}


# The whole list of what the helper does (each carried out in services/helper_main.py).
REQUESTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "apply-settings": _check_apply,
    "service": _check_service,
    "make-maildir": _check_address,
    "queue": _check_queue,
    "tls-install": _check_tls,
    "tls-list": _check_none,
    "spam-render": _check_spam_render,
    "status": _check_status,
}


def check(message: Any) -> tuple[str, dict[str, Any]]:
    """The request's name and its checked arguments; HelperRefused for anything else."""
    if not isinstance(message, dict) or set(message) - {"request", "args"}:
        raise HelperRefused('a request is {"request": NAME, "args": {...}}')
    name = message.get("request")
    if not isinstance(name, str) or name not in REQUESTS:
        raise HelperRefused(f"unknown request {str(name)[:40]!r}; known: {', '.join(REQUESTS)}")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise HelperRefused(f"{name}: 'args' must be an object")
    return name, REQUESTS[name](args)


def decode(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HelperRefused("a request is one line of JSON in UTF-8") from None


# ---- the client (the panel) ---------------------------------------------------------------------


def call(home: Home, request: str, timeout: float = ANSWER_WAIT_SECONDS, **args: Any) -> Any:
    """Ask the node's helper; the result, or HelperError / HelperRefused / HelperUnavailable."""
    line = json.dumps({"request": request, "args": args}).encode() + b"\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(socket_path(home)))
        except OSError as exc:
            raise HelperUnavailable("the node's helper is not running (start the node with "
                                    f"`mailyard up`): {exc.strerror or exc}") from None
        sock.sendall(line)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise HelperError("the helper's answer is too long")
    except TimeoutError:
        raise HelperError(f"the helper did not answer {request} within {timeout:.0f} s") from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HelperError(f"the helper gave no answer to {request}") from None
    if answer.get("ok"):
        return answer.get("result")
    error = str(answer.get("error") or "failed")
    raise (HelperRefused if answer.get("refused") else HelperError)(error)


# ---- through the helper when it answers, else here (code shared by root and the panel) --------
# The cluster agent runs in the panel (as mailyard-panel) and its heartbeat also runs from the
# CLI as root with no node up; these ask the helper when one answers and otherwise do the work
# in this process, where an unprivileged caller simply lacks the rights (no fallback to root).


def status_or_local(home: Home, with_versions: bool = False) -> list[ServiceStatus]:
    try:
        rows = call(home, "status", with_versions=with_versions)
    except HelperUnavailable:
        return control.status(home, with_versions=with_versions)
    return [ServiceStatus(**row) for row in rows]


def apply_or_local(home: Home, keys: list[str], unchanged: frozenset[str] = frozenset()
                   ) -> tuple[list[str], list[str], list[str]]:
    try:
        done = call(home, "apply-settings", keys=keys, unchanged=sorted(unchanged))
    except HelperUnavailable:
        return apply_keys(home, keys, unchanged)
    return list(done["reloaded"]), list(done["restarted"]), list(done["problems"])


def service_or_local(home: Home, action: str, name: str) -> None:
    """control.start/stop/restart/reload; ControlError (or HelperError) when it fails."""
    try:
        call(home, "service", action=action, name=name)
    except HelperUnavailable:
        getattr(control, action)(home, name)


def queue_or_local(home: Home, action: str, which: str = "") -> Any:
    """queue.admin.process / purge(which) as the mail owner; QueueError-like HelperRefused."""
    args: dict[str, Any] = {"which": which} if action == "purge" else {}
    try:
        return call(home, "queue", action=action, **args)
    except HelperUnavailable:
        return admin.purge(home, which) if action == "purge" else admin.process(home)

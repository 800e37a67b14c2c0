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
from ..queue import admin, holds
from ..queue import select as queue_select
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
QUEUE_ACTIONS = ("delete", "purge", "process", "test-message", "list", "show", "stats",
                 "browse", "act")
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


def _check_address(args: dict[str, Any], request: str = "make-maildir") -> dict[str, Any]:
    _only(args, request, ("address",))
    address = _text(args, request, "address", MAX_ADDRESS_LENGTH).strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or "/" in address or not _DOMAIN.fullmatch(domain):
        raise HelperRefused(f"{request}: {address!r} is not a mailbox address "
                            "(local@domain)")
    return {"address": address}


def _check_queue(args: dict[str, Any]) -> dict[str, Any]:
    action = _text(args, "queue", "action", 16)
    if action not in QUEUE_ACTIONS:
        raise HelperRefused(f"queue: unknown action {action!r}; allowed: "
                            f"{', '.join(QUEUE_ACTIONS)}")
    if action == "browse":
        return _check_browse(args)
    if action == "act":
        return _check_act(args)
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


# ---- the queue browser, the trail, usage and the rate counters (read as the mail owner) ------

# The most ids one `act` names: the API's own bound of an action request (panel/api_queue.py).
MAX_ACTION_IDS = 10_000
# The furthest a page of the browser may start: the Mail Queue page's last page (1,000,000
# pages of 50) and the API's bound of `offset` (10,000,000) are both below.
MAX_BROWSE_OFFSET = 100_000_000
# A filter's older_than, in seconds: the longest duration queue.select parses (nine digits
# of weeks), so that whatever the panel accepted is accepted here too.
MAX_OLDER_THAN_SECONDS = 999_999_999 * queue_select.DURATION_UNITS["w"]
FILTER_FIELDS = ("sender", "recipient", "domain", "older_than", "state", "held", "which")
# The trail: the query is an address, a Message-ID or a queue id (mailyard.trail's bound);
# the most messages one answer carries (panel/api_trail.py's MAX_LIMIT).
MAX_TRAIL_QUERY = 320
MAX_TRAIL_LIMIT = 5000
# A trail's `since` in seconds from the epoch: any real date (2**40 s is 34,000 years); NaN and
# infinities (which Python's JSON reads) fail the comparison.
MAX_EPOCH_SECONDS = 2**40
LIMITS_PARTS = ("report", "over")


def _int(args: dict[str, Any], request: str, name: str, low: int, high: int,
         default: int | None = None) -> int:
    value: object = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HelperRefused(f"{request}: argument {name!r} must be a whole number from {low} "
                            f"to {high}")
    return value


def _choice(value: object, request: str, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise HelperRefused(f"{request}: {name} {str(value)[:40]!r} is not allowed; allowed: "
                            f"{', '.join(allowed)}")
    return value


def _queue_filter(value: object) -> dict[str, Any]:
    """A browser filter as queue.select.make_filter takes it (older_than in seconds)."""
    if not isinstance(value, dict):
        raise HelperRefused("queue: argument 'filter' must be an object of "
                            f"{', '.join(FILTER_FIELDS)}")
    _only(value, "queue filter", FILTER_FIELDS)
    out: dict[str, Any] = {}
    for name in ("sender", "recipient", "domain"):
        if value.get(name) is not None:
            out[name] = _text(value, "queue filter", name, queue_select.MAX_FILTER_TEXT)
    if value.get("older_than") is not None:
        out["older_than"] = _int(value, "queue filter", "older_than", 0,
                                 MAX_OLDER_THAN_SECONDS)
    if value.get("state") is not None:
        out["state"] = _choice(value["state"], "queue filter", "state",
                               queue_select.RECIPIENT_STATES)
    if value.get("held") is not None:
        if not isinstance(value["held"], bool):
            raise HelperRefused("queue filter: argument 'held' must be true or false")
        out["held"] = value["held"]
    out["which"] = _choice(value.get("which", "all"), "queue filter", "which",
                           queue_select.WHICH_CHOICES)
    return out


def _queue_ids(args: dict[str, Any]) -> list[str]:
    ids = args.get("ids", [])
    if not isinstance(ids, list) or len(ids) > MAX_ACTION_IDS:
        raise HelperRefused(f"queue: argument 'ids' must be a list of at most {MAX_ACTION_IDS} "
                            "queue ids")
    for qid in ids:
        if not isinstance(qid, str) or not _QUEUE_ID.fullmatch(qid):
            raise HelperRefused(f"queue: {str(qid)[:40]!r} is not a queue id (digits only)")
    return list(dict.fromkeys(ids))


def _check_browse(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "queue", ("action", "filter", "offset", "limit"))
    return {"action": "browse", "filter": _queue_filter(args.get("filter", {})),
            "offset": _int(args, "queue", "offset", 0, MAX_BROWSE_OFFSET, 0),
            "limit": _int(args, "queue", "limit", 1, admin.MAX_PAGE, admin.MAX_PAGE)}


def _check_act(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "queue", ("action", "operation", "ids", "filter", "reason"))
    operation = _choice(args.get("operation"), "queue", "operation", admin.ACTIONS)
    ids = _queue_ids(args)
    f = None if args.get("filter") is None else _queue_filter(args["filter"])
    if not ids and (f is None or queue_select.make_filter(**f).empty()):
        raise HelperRefused("queue: act names no message: give ids or a filter")
    reason = _text(args, "queue", "reason", holds.MAX_REASON_LENGTH, required=False) \
        if args.get("reason") is not None else None
    return {"action": "act", "operation": operation, "ids": ids, "filter": f,
            "reason": reason}


def _check_trail(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "trail", ("q", "since", "limit"))
    q = _text(args, "trail", "q", MAX_TRAIL_QUERY)
    since = args.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)
                              or not -MAX_EPOCH_SECONDS < since < MAX_EPOCH_SECONDS):
        raise HelperRefused("trail: argument 'since' must be seconds since the epoch")
    return {"q": q, "since": None if since is None else float(since),
            "limit": _int(args, "trail", "limit", 1, MAX_TRAIL_LIMIT)}


def _check_usage(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "usage", ("address", "domain"))
    out: dict[str, Any] = {"address": None, "domain": None}
    if args.get("address") is not None:
        out["address"] = _check_address({"address": args["address"]}, "usage")["address"]
    if args.get("domain") is not None:
        domain = _text(args, "usage", "domain", 253).strip().lower()
        if not _DOMAIN.fullmatch(domain):
            raise HelperRefused(f"usage: {domain!r} is not a domain name")
        out["domain"] = domain
    if out["address"] and out["domain"]:
        raise HelperRefused("usage: give an address or a domain, not both")
    return out


def _check_limits(args: dict[str, Any]) -> dict[str, Any]:
    _only(args, "limits", ("part",))
    return {"part": _choice(args.get("part", "report"), "limits", "part", LIMITS_PARTS)}


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
    "trail": _check_trail,
    "usage": _check_usage,
    "limits": _check_limits,
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

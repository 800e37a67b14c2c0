"""The `sendmail` service: queues mail for local users who may not write the queue themselves.

The queue and the store are the mail owner's (0750, 0600), so a web site's PHP running as its
own user cannot inject the way root's cron does. This daemon, running as the mail owner
(never root), listens on the unix socket HOME/run/sendmail.sock (mode 0666: any local user
may connect), learns each caller's uid, gid and pid from the kernel (SO_PEERCRED: the caller
cannot lie about them), does what sendmail does in-process for root (default domain, size
limit, outbound blacklist) plus the outbound rate limit of the caller's uid, and queues the
message with the caller's uid in its envelope, which the send log's `uid` field shows, as
qmail-queue records its caller's.

Protocol, one message per connection:

    client -> daemon   one line of JSON (at most MAX_REQUEST_LINE octets, ending in \\n):
                       {"v": 1, "args": [the sendmail command line, as given]}
                       then the message, exactly as sendmail reads it from standard input,
                       up to the end of the client's writing side (shutdown SHUT_WR)
    daemon -> client   one status line: "<exit status> <text>\\n", status 0 with the queue
                       id as text when queued, else a sysexits.h code and the reason

The daemon parses the arguments itself (the client's word counts for nothing the kernel
does not vouch for). Bounded: at most MAX_CALLERS connections at once (the next one is told
75 at once), READ_TIMEOUT seconds of silence end a connection with 75, and the message size
limit is enforced while the message is read, so nothing over it is ever stored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import __version__
from ..logs import LogDir
from ..services.privileges import chown_path, drop_privileges
from ..store.view import StoreView
from . import ratelimit as RL
from .ratetable import RateTable, on_over_limit
from .ratetable import prepare as prepare_rate_table
from .sendmail import (
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_USAGE,
    Caller,
    SendmailError,
    inject,
    load_node_settings,
    parse_args,
)

if TYPE_CHECKING:
    from ..home import Home

SOCKET_NAME = "sendmail.sock"
SOCKET_MODE = 0o666  # every local user may hand in mail; who they are comes from the kernel
# Callers served at once. Postfix's default_process_limit is 100 for all its daemons; a burst
# of PHP mail() calls beyond 64 at once is told to try again (75) rather than queued up here.
MAX_CALLERS = 64
# Seconds a caller may stay silent while it sends; Postfix's postdrop has no such limit (it
# writes a file), its smtpd's is 300 s. A local program that stalls this long is stuck.
READ_TIMEOUT = 60.0
# The request line: the command line of sendmail, far below this even with many recipients.
MAX_REQUEST_LINE = 256 * 1024
LISTEN_BACKLOG = 128
# On stop, callers in the middle of a message get this long to finish (as the SMTP services;
# supervisord waits 15 s before it kills us).
SHUTDOWN_GRACE = 10.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def version() -> str:
    return f"mailyard-sendmail {__version__}"


def socket_path(home: Home) -> Path:
    return home.run_dir / SOCKET_NAME


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel saw it connect."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def bind(path: Path) -> socket.socket:
    """The listening socket, made before the privilege drop (HOME/run is root's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = os.stat(path.parent).st_mode
    os.chmod(path.parent, mode | 0o111)  # search only: every local user must reach the socket
    try:
        path.unlink()  # a socket left by a daemon that died
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o111)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    sock.listen(LISTEN_BACKLOG)
    return sock


class Daemon:
    """Accepts callers and serves each one in a thread of its own (at most MAX_CALLERS)."""

    def __init__(self, home: Home, sock: socket.socket, log: LogDir) -> None:
        self.home = home
        self.sock = sock
        self.log = log
        self.slots = threading.BoundedSemaphore(MAX_CALLERS)
        self.view = StoreView(home)
        self.rates = RateTable(home)
        self.stopping = threading.Event()
        self.workers: set[threading.Thread] = set()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            if not self.slots.acquire(blocking=False):
                self._answer(conn, EX_TEMPFAIL, f"sendmail: {MAX_CALLERS} messages are being "
                             "handed in already; try again in a moment; nothing was sent")
                conn.close()
                self.log.write(f"busy callers={MAX_CALLERS}")
                continue
            worker = threading.Thread(target=self._serve_one, args=(conn,), daemon=True)
            self.workers.add(worker)
            worker.start()

    def drain(self, grace: float = SHUTDOWN_GRACE) -> int:
        """Wait up to `grace` seconds for the callers being served; how many are left."""
        deadline = time.monotonic() + grace
        for worker in list(self.workers):
            worker.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for w in list(self.workers) if w.is_alive())

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # ---- one caller ----------------------------------------------------------------------------
    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                pid, uid, _gid = peer_credentials(conn)
                conn.settimeout(READ_TIMEOUT)
                stream = conn.makefile("rb")
                try:
                    status, text = self._handle(stream, Caller.of_uid(uid), pid)
                finally:
                    stream.close()
                self._answer(conn, status, text)
        except OSError as exc:  # the caller went away; nothing was queued for it
            self.log.write(f"dropped error={type(exc).__name__}: {exc}")
        finally:
            self.slots.release()
            self.workers.discard(threading.current_thread())

    def _handle(self, stream: BinaryIO, caller: Caller, pid: int) -> tuple[int, str]:
        try:
            line = stream.readline(MAX_REQUEST_LINE)
        except TimeoutError:
            return EX_TEMPFAIL, "sendmail: the request did not arrive in time; nothing was sent"
        if not line:
            return EX_USAGE, "sendmail: empty request"  # a readiness check: connect, close
        try:
            request = json.loads(line)
            args = request["args"]
            if request.get("v") != 1 or not isinstance(args, list) or \
                    not all(isinstance(a, str) for a in args):
                raise ValueError("args must be a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            return EX_USAGE, f"sendmail: the request is not sendmail's ({exc}); nothing was sent"
        try:
            opts = parse_args(args)
            settings = load_node_settings(self.home)
            limits = RL.Limits.from_settings(settings)
            qid = inject(self.home, settings, opts, stream, caller,
                         lambda sender, rcpts: self._charge(settings, limits, caller, sender,
                                                            rcpts))
        except SendmailError as exc:
            self.log.write(f"refused uid={caller.uid} pid={pid} status={exc.status} {exc}")
            return exc.status, str(exc)
        except TimeoutError:
            self.log.write(f"timeout uid={caller.uid} pid={pid} after={READ_TIMEOUT:g}s")
            return EX_TEMPFAIL, (f"sendmail: no data for {READ_TIMEOUT:g} seconds; nothing "
                                 "was sent")
        except Exception as exc:  # a bug of ours: the caller tries again, we log it
            self.log.write(f"error uid={caller.uid} pid={pid} {type(exc).__name__}: {exc}")
            return EX_SOFTWARE, f"sendmail: internal error ({type(exc).__name__}); nothing was sent"
        self.log.write(f"queued qid={qid} uid={caller.uid} pid={pid}")
        return 0, qid

    def _charge(self, settings: dict[str, Any], limits: RL.Limits, caller: Caller,
                sender: str, recipients: list[str]) -> None:
        """The rate limit of the caller's uid, counted just before the commit."""
        if not limits.any:
            return
        try:
            snap = self.view.refresh() if self.view.stale() else self.view.current()
        except Exception as exc:  # any store or driver error: the caller tries again later
            raise SendmailError(f"sendmail: cannot read the node's domains ({type(exc).__name__}"
                                f"); try again later; nothing was sent", EX_TEMPFAIL) from None
        own = {str(settings["server.hostname"]).lower(),
               str(settings["server.default_domain"]).lower()}

        def local(address: str) -> bool:
            domain = address.rpartition("@")[2].lower()
            return domain in own or snap.recipient(address).domain_local

        remote = [r for r in recipients if not local(r)]
        domain = sender.rpartition("@")[2].lower() if sender else ""
        # xuser's meaning: the caller's domains are those the store says it owns
        owned = domain if domain and snap.domains.get(domain) == caller.login else ""
        try:
            found = self.rates.charge(limits, RL.uid_sender(caller.uid, owned), len(remote))
        except OSError as exc:  # a broken counter never stops the mail; it is logged
            self.log.write(f"rate-table-error uid={caller.uid} {type(exc).__name__}: {exc}")
            return
        if found is not None:
            raise self._refuse(found, limits)

    def _refuse(self, found: RL.Verdict, limits: RL.Limits) -> SendmailError:
        try:
            on_over_limit(self.home, found.key, found, limits, self.log.write)
        except OSError as exc:
            self.log.write(f"rate-table-error {type(exc).__name__}: {exc}")
        return SendmailError(f"sendmail: {found.describe()}; try again later; nothing was sent",
                             EX_TEMPFAIL)

    @staticmethod
    def _answer(conn: socket.socket, status: int, text: str) -> None:
        line = f"{status} {' '.join(text.split())}\n".encode("utf-8", "replace")
        try:
            conn.sendall(line)
        except OSError:
            pass


def run(home: Home) -> None:
    """Entry point of the supervised `sendmail` program."""
    log = LogDir(home.service_log_dir("sendmail"))
    chown_path(log.path)  # opened as root: the mail owner keeps writing and rotating it
    chown_path(log.path / "current")
    sock = bind(socket_path(home))
    prepare_rate_table(home)
    drop_privileges()
    daemon = Daemon(home, sock, log)
    log.write(f"start {version()} service=sendmail pid={os.getpid()} uid={os.getuid()} "
              f"socket={socket_path(home)} callers={MAX_CALLERS}")

    def on_term(_signum: int, _frame: Any) -> None:
        daemon.stop()

    def on_hup(_signum: int, _frame: Any) -> None:
        log.write("reload service=sendmail (settings are read for every message)")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)  # `mailyard service reload sendmail`: nothing to do
    try:
        daemon.serve()
        left = daemon.drain()
        if left:
            log.write(f"stopping callers={left} still sending after {SHUTDOWN_GRACE:g}s")
    finally:
        log.write(f"stopped service=sendmail pid={os.getpid()}")
        log.close()

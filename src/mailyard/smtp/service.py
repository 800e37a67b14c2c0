"""Entry points of the `smtp` and `submission` services: listeners, privileges, signals, reload.

`run_smtp(home)` serves port 25 (+ port base); `run_submission(home)` serves the submission
port and, as a third listener, SMTPS with implicit TLS (RFC 8314). Each binds its ports, then
drops root, then serves until SIGTERM; SIGHUP re-reads the settings for new connections
(ports and the certificate are read at start only: change them with a restart).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import Coroutine
from typing import Any

from .. import __version__
from ..home import Home
from ..logs import LogDir
from ..services.privileges import chown_path, drop_privileges
from ..services.server_tls import server_context, sni_context
from ..store.db import engine_for
from ..store.settings_store import load_settings
from .authchecks import prepare as prepare_auth_checks
from .policy import Policy
from .ratetable import prepare as prepare_rate_table
from .server import SmtpServer, bind
from .shared import SharedState
from .workers import LogPipe, Parent, worker_count

try:  # libuv's event loop: less CPU per connection and per command (pyproject installs it)
    import uvloop
except ImportError:  # the service runs on asyncio's own loop without it
    uvloop = None  # type: ignore[assignment]

# Listen on every address unless the (proposed) setting `smtp.listen_address` names one;
# None makes asyncio bind all IPv4 and IPv6 addresses.
_ALL_ADDRESSES: str | None = None


def version() -> str:
    return f"mailyard-smtp {__version__}"


def run_smtp(home: Home) -> None:
    _run(home, "smtp")


def run_submission(home: Home) -> None:
    _run(home, "submission")


def _tls_context(home: Home, log: LogDir) -> ssl.SSLContext | None:
    try:
        # a hosted domain's own certificate (mailyard tls install --domain) by SNI
        return sni_context(server_context(home.cert_file, home.key_file), home.tls_dir)
    except (OSError, ssl.SSLError) as exc:
        log.write(f"tls-unavailable cert={home.cert_file} error={exc}")
        return None


def _open_log(home: Home, service: str) -> LogDir:
    log = LogDir(home.service_log_dir(service))
    # Opened as root before the privilege drop: give the directory and file to the mail owner
    # so that rotation keeps working afterwards.
    chown_path(log.path)
    chown_path(log.path / "current")
    return log


def _preload_filters(settings: dict[str, Any], log: LogDir) -> None:
    """Import the SMTP-level filters now if a scanning setting is on: after the privilege
    drop the interpreter's own files may be out of reach (the server imports it lazily too,
    for a reload that turns scanning on)."""
    # Always, not only when scanning is on now: a reload may turn it on later, and by then
    # the interpreter's own files (e.g. under /root) may be out of the mail user's reach.
    try:
        import mailyard.filters.smtp_level  # noqa: F401
    except Exception as exc:  # the session answers 451 while the filter cannot load
        log.write(f"filters-unavailable error={type(exc).__name__}: {exc}")


class _ToLogDir(logging.Handler):
    """Carries the filters' log records (spamd unavailable, scan results) into our log."""

    def __init__(self, log: LogDir | LogPipe, prefix: str = "filter") -> None:
        super().__init__(logging.INFO)
        self.log = log
        self.prefix = prefix

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.write(f"{self.prefix} {record.levelname.lower()} {record.getMessage()}")
        except Exception:  # a log line must never break a session
            self.handleError(record)


def _run(home: Home, service: str) -> None:
    log = _open_log(home, service)
    filters_log = logging.getLogger("mailyard.filters")
    filters_log.setLevel(logging.INFO)
    filters_log.propagate = False
    store_log = logging.getLogger("mailyard.store")  # store outages and the cache's use
    store_log.setLevel(logging.INFO)
    store_log.propagate = False
    _log_to(log)
    settings = load_settings(home)
    tls = _tls_context(home, log)  # before dropping root: the key is readable by root only
    _preload_filters(settings, log)
    prepare_auth_checks(service)  # before the drop, as the filters' imports
    try:
        ports = _ports(home, service, settings, tls)
        sockets = _bind_all(settings, service, ports, log)
        prepare_rate_table(home)  # HOME/var is root's: made for the mail owner before the drop
        drop_privileges()
        count = worker_count(int(settings["smtp.workers"]))
        shared = SharedState()
        start_line = (f"start {version()} service={service} pid={os.getpid()} "
                      f"uid={os.getuid()} "
                      f"ports={','.join(str(p) + ('/tls' if t else '') for p, t in ports)} "
                      f"auth_mode={settings[f'{service}.auth_mode']} workers={count}")
        if count == 1:
            log.write(start_line)
            _run_loop(_serve(home, service, settings, tls, log, sockets, shared, None))
            return

        def serve(index: int, pipe: LogPipe) -> None:
            engine_for(home.db_url).dispose(close=False)  # the parent's connections stay its
            _log_to(pipe)
            _run_loop(_serve(home, service, settings, tls, pipe, sockets, shared, index))

        parent = Parent(service, count, log, shared, serve)
        log.write(start_line)
        parent.run()
        log.write(f"stopped service={service}")
    finally:
        log.close()


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the service's coroutine on uvloop where it is installed, else on asyncio's loop."""
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def _log_to(log: LogDir | LogPipe) -> None:
    """The filters' and the store's log records go to this process's service log."""
    for name, prefix in (("mailyard.filters", "filter"), ("mailyard.store", "store")):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, _ToLogDir):
                logger.removeHandler(handler)
        logger.addHandler(_ToLogDir(log, prefix))


def _ports(home: Home, service: str, settings: dict[str, Any],
           tls: ssl.SSLContext | None) -> list[tuple[int, bool]]:
    if service == "smtp":
        return [(home.port("smtp", settings), False)]
    ports = [(home.port("submission", settings), False)]
    if tls is not None:
        ports.append((home.port("smtps", settings), True))
    return ports


def _bind_all(settings: dict[str, Any], service: str, ports: list[tuple[int, bool]],
              log: LogDir) -> list[tuple[socket.socket, bool]]:
    host = settings.get("smtp.listen_address") or _ALL_ADDRESSES
    bound: list[tuple[socket.socket, bool]] = []
    for port, implicit in ports:
        try:
            bound += [(sock, implicit) for sock in bind(host, port)]
        except OSError as exc:
            log.write(f"cannot-listen service={service} port={port} error={exc}")
            for sock, _ in bound:
                sock.close()
            raise SystemExit(f"mailyard {service}: cannot listen on port {port}: {exc}") \
                from None
    return bound


async def _serve(home: Home, service: str, settings: dict[str, Any],
                 tls: ssl.SSLContext | None, log: LogDir | LogPipe,
                 sockets: list[tuple[socket.socket, bool]], shared: SharedState,
                 worker: int | None) -> None:
    """One process serving the sockets: the whole service, or worker number `worker`."""
    policy = Policy.from_settings(settings, service, tls_available=tls is not None)
    server = SmtpServer(home, service, policy, settings, log, tls, shared=shared)  # type: ignore[arg-type]
    for sock, implicit in sockets:
        await server.listen(sock, implicit_tls=implicit)
    who = f"service={service}" if worker is None else f"service={service} worker={worker}"
    if worker is not None:
        log.write(f"worker-start {who} pid={os.getpid()}")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            fresh = await asyncio.to_thread(load_settings, home)
            server.reload(Policy.from_settings(fresh, service, tls_available=tls is not None),
                          fresh)
            line = f"reload service={service} auth_mode={fresh[f'{service}.auth_mode']}"
            if isinstance(log, LogPipe):
                log.reloaded(line)  # the parent logs it once every worker has reloaded
            else:
                log.write(line)
        except Exception as exc:  # keep serving with the settings we have
            log.write(f"reload-failed {who} error={type(exc).__name__}: {exc}")

    def on_hup() -> None:
        task = asyncio.ensure_future(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    if worker is None:
        log.write(f"stopping {who} sessions={len(server.conversations)}")
    await server.stop()
    server.queue.committer.close()
    log.write(f"stopped {who}")

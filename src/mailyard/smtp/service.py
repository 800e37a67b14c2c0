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
import ssl
from typing import Any

from .. import __version__
from ..home import Home
from ..logs import LogDir
from ..services.privileges import chown_path, drop_privileges
from ..services.tls import server_context
from ..store.settings_store import load_settings
from .policy import Policy
from .server import SmtpServer

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
        return server_context(home.cert_file, home.key_file)
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

    def __init__(self, log: LogDir, prefix: str = "filter") -> None:
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
    filters_log.addHandler(_ToLogDir(log))
    filters_log.propagate = False
    store_log = logging.getLogger("mailyard.store")  # store outages and the cache's use
    store_log.setLevel(logging.INFO)
    store_log.addHandler(_ToLogDir(log, "store"))
    store_log.propagate = False
    settings = load_settings(home)
    tls = _tls_context(home, log)  # before dropping root: the key is readable by root only
    _preload_filters(settings, log)
    try:
        asyncio.run(_serve(home, service, settings, tls, log))
    finally:
        log.close()


async def _serve(home: Home, service: str, settings: dict[str, Any],
                 tls: ssl.SSLContext | None, log: LogDir) -> None:
    policy = Policy.from_settings(settings, service, tls_available=tls is not None)
    server = SmtpServer(home, service, policy, settings, log, tls)
    host = settings.get("smtp.listen_address") or _ALL_ADDRESSES
    ports: list[tuple[int, bool]] = []
    if service == "smtp":
        ports.append((home.port("smtp", settings), False))
    else:
        ports.append((home.port("submission", settings), False))
        if tls is not None:
            ports.append((home.port("smtps", settings), True))
    for port, implicit in ports:
        try:
            await server.listen(host, port, implicit_tls=implicit)
        except OSError as exc:
            log.write(f"cannot-listen service={service} port={port} error={exc}")
            raise SystemExit(f"mailyard {service}: cannot listen on port {port}: {exc}") \
                from None
    drop_privileges()
    log.write(f"start {version()} service={service} pid={os.getpid()} uid={os.getuid()} "
              f"ports={','.join(str(p) + ('/tls' if t else '') for p, t in ports)} "
              f"auth_mode={settings[f'{service}.auth_mode']}")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            fresh = await asyncio.to_thread(load_settings, home)
            server.reload(Policy.from_settings(fresh, service, tls_available=tls is not None),
                          fresh)
            log.write(f"reload service={service} auth_mode={fresh[f'{service}.auth_mode']}")
        except Exception as exc:  # keep serving with the settings we have
            log.write(f"reload-failed service={service} error={type(exc).__name__}: {exc}")

    def on_hup() -> None:
        task = asyncio.ensure_future(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.write(f"stopping service={service} sessions={len(server.conversations)}")
    await server.stop()
    log.write(f"stopped service={service}")

"""Service control for a node: start the supervisor, start/stop/restart services, report status.

The CLI and the panel both call these functions. supervisord runs every program; the four
Dovecot services share one program and are switched through the MDA's own control hook.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import asdict, dataclass
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from ..home import Home
from ..mda.dovecot import reset_listeners
from ..nodeinit import HomeUnreachable, check_reach, give_store_to_mail_owner, secure_home
from ..settings.registry import SERVICE_NAMES
from ..store.away import mark_store_away
from ..store.cache import refresh_cache
from ..store.settings_store import load_settings
from . import supervisor_conf
from .catalog import SERVICES
from .errors import ControlError
from .readiness import serves, serves_unix
from .run import load

# How long `mailyard up` waits for every enabled service to accept connections. spamd loads
# its rules in about 1.5 s on these machines, clamd with official databases can take 20 s+.
UP_TIMEOUT_SECONDS = 120.0
SUPERVISOR_START_TIMEOUT = 20.0
LOG_TAIL_LINES = 15

# supervisord's states mapped onto the four the contract promises.
_STATE_MAP = {
    "RUNNING": "RUNNING", "STARTING": "STARTING", "BACKOFF": "STARTING",
    "STOPPED": "STOPPED", "STOPPING": "STOPPED", "EXITED": "STOPPED",
    "FATAL": "FATAL", "UNKNOWN": "FATAL",
}


@dataclass
class ServiceStatus:
    name: str
    state: str
    pid: int | None
    uptime: int
    version: str
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rpc(home: Home) -> Any:
    """An XML-RPC proxy to the node's supervisord over its unix socket."""
    url = f"unix://{supervisor_conf.socket_path(home)}"
    transport = SupervisorTransport(None, None, url)
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def supervisor_running(home: Home) -> bool:
    if not supervisor_conf.socket_path(home).exists():
        return False
    try:
        return bool(rpc(home).supervisor.getState()["statename"] == "RUNNING")
    except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
        return False


def _prepare(home: Home) -> None:
    """Everything the services need before supervisord starts them."""
    try:
        check_reach(home.root)
    except HomeUnreachable as exc:
        raise ControlError(str(exc)) from None
    settings = load_settings(home)
    supervisor_conf.render(home, settings)
    give_store_to_mail_owner(home)
    secure_home(home)
    try:
        from ..filters.clamd import install_local_signatures
    except ImportError:
        return
    install_local_signatures(home)


def start_supervisor(home: Home, foreground: bool = False) -> subprocess.Popen[bytes] | None:
    """Start supervisord for the node (as a daemon, or as a child process when `foreground`)."""
    _prepare(home)
    if supervisor_running(home):
        return None
    conf = supervisor_conf.config_path(home)
    cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    env = dict(os.environ, MAILYARD_HOME=str(home.root))
    if foreground:
        proc = subprocess.Popen(cmd + ["-n"], env=env, start_new_session=True)
    else:
        subprocess.run(cmd, env=env, check=True)
        proc = None
    deadline = time.monotonic() + SUPERVISOR_START_TIMEOUT
    while time.monotonic() < deadline:
        if supervisor_running(home):
            return proc
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    raise ControlError("supervisord did not start; see "
                       f"{home.log_dir / 'supervisord' / 'supervisord.log'}")


def enabled_services(home: Home, settings: dict[str, Any] | None = None) -> list[str]:
    settings = settings or load_settings(home)
    return [n for n in SERVICE_NAMES if settings[f"service.{n}.start_on_boot"]]


def log_tail(home: Home, service: str, lines: int = LOG_TAIL_LINES) -> str:
    program = SERVICES[service].program
    chunks: list[str] = []
    for path in (supervisor_conf.daemon_log(home, program),
                 home.log_dir / service / "current"):
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(chunks) or "(no log yet)"


def wait_ready(home: Home, services: list[str], timeout: float = UP_TIMEOUT_SECONDS) -> None:
    """Return when every named service runs and its listeners accept connections."""
    settings = load_settings(home)
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending:
        states = {s.name: s for s in status(home, with_versions=False)}
        for name in list(pending):
            st = states[name]
            if st.state == "FATAL":
                raise ControlError(f"service {name} failed to start (FATAL)\n"
                                   f"{log_tail(home, name)}")
            if st.state != "RUNNING":
                continue
            ports = [home.port(lst, settings) for lst in SERVICES[name].listeners]
            sockets = [load(ref)(home) for ref in SERVICES[name].sockets]
            if (st.pid and all(serves(st.pid, p) for p in ports)
                    and all(serves_unix(st.pid, path) for path in sockets)):
                pending.remove(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            name = pending[0]
            raise ControlError(f"service {name} did not accept connections within "
                               f"{timeout:.0f} s\n{log_tail(home, name)}")
        time.sleep(0.2)


def up(home: Home, timeout: float = UP_TIMEOUT_SECONDS) -> list[str]:
    """Start the node (supervisord and every enabled service); wait until they serve."""
    reset_listeners(home)  # a fresh start follows start-on-boot, not last run's switches
    _refresh_cache(home)
    start_supervisor(home)
    services = enabled_services(home)
    for name in services:
        start(home, name, wait=False)
    wait_ready(home, services, timeout)
    return services


def _refresh_cache(home: Home) -> None:
    """Bring the local cache of a cluster's store up to date before the services start; a
    store that is away leaves the last copy, which the services then work from."""
    try:
        refresh_cache(home)
    except Exception as exc:
        mark_store_away(home, True, type(exc).__name__)  # Dovecot starts on the cache
        print(f"warning: the store did not answer ({type(exc).__name__}); the services start "
              "from the local cache", file=sys.stderr)
    else:
        mark_store_away(home, False)


def down(home: Home) -> None:
    """Stop every service and supervisord itself."""
    if not supervisor_running(home):
        return
    pidfile = home.run_dir / "supervisord.pid"
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    try:
        rpc(home).supervisor.shutdown()
    except (OSError, xmlrpc.client.Fault):
        pass
    deadline = time.monotonic() + supervisor_conf.STOP_WAIT_SECONDS + 10
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


# ---- single services ------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in SERVICES:
        raise ControlError(f"no service named {name!r}; services are: {', '.join(SERVICES)}")


def _program_info(home: Home, program: str) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = rpc(home).supervisor.getProcessInfo(program)
        return info
    except (OSError, xmlrpc.client.Fault):
        return None


def _start_program(home: Home, program: str, wait: bool) -> None:
    try:
        rpc(home).supervisor.startProcess(program, wait)
    except xmlrpc.client.Fault as fault:
        if "ALREADY_STARTED" not in fault.faultString:
            raise ControlError(f"{program}: {fault.faultString}") from None


def _stop_program(home: Home, program: str) -> None:
    try:
        rpc(home).supervisor.stopProcess(program, True)
    except xmlrpc.client.Fault as fault:
        if "NOT_RUNNING" not in fault.faultString:
            raise ControlError(f"{program}: {fault.faultString}") from None


def _require_supervisor(home: Home) -> None:
    if not supervisor_running(home):
        raise ControlError("the node is not running; start it with `mailyard up`")


def start(home: Home, name: str, wait: bool = True) -> None:
    _check_name(name)
    _require_supervisor(home)
    spec = SERVICES[name]
    if spec.control:
        load(spec.control)(home, name, "start")
        info = _program_info(home, spec.program)
        if not info or info["statename"] not in ("RUNNING", "STARTING"):
            _start_program(home, spec.program, wait)
        return
    _start_program(home, spec.program, wait)


def stop(home: Home, name: str) -> None:
    _check_name(name)
    _require_supervisor(home)
    spec = SERVICES[name]
    if spec.control:
        load(spec.control)(home, name, "stop")
        sharing = [s for s in SERVICES.values() if s.program == spec.program]
        if all(load(s.control)(home, s.name, "status") == "STOPPED" for s in sharing
               if s.control):
            _stop_program(home, spec.program)
        return
    _stop_program(home, spec.program)


def restart(home: Home, name: str) -> None:
    _check_name(name)
    spec = SERVICES[name]
    if spec.control:
        _require_supervisor(home)
        info = _program_info(home, spec.program)
        load(spec.control)(home, name, "restart")
        if not info or info["statename"] not in ("RUNNING", "STARTING"):
            _start_program(home, spec.program, True)
        return
    stop(home, name)
    start(home, name)


def reload(home: Home, name: str) -> None:
    """Make a running service read its settings again (SIGHUP, or the MDA's reload)."""
    _check_name(name)
    _require_supervisor(home)
    spec = SERVICES[name]
    if spec.control:
        load(spec.control)(home, name, "reload")
        return
    info = _program_info(home, spec.program)
    if not info or info["statename"] != "RUNNING":
        return
    if name in ("clamd", "freshclam"):
        restart(home, name)  # clamd re-reads clamd.conf only when started
        return
    if name == "spamd":
        # spamd re-reads its rules on SIGHUP, but its config is rendered at start: render now.
        load(spec.entry)(home)
    os.kill(int(info["pid"]), signal.SIGHUP)


def apply_supervisor_settings(home: Home) -> None:
    """After start-on-boot / auto-restart changes: rewrite supervisord's config and load it."""
    supervisor_conf.render(home, load_settings(home))
    if not supervisor_running(home):
        return
    proxy = rpc(home)
    added, changed, removed = proxy.supervisor.reloadConfig()[0]
    for group in removed:
        proxy.supervisor.stopProcessGroup(group)
        proxy.supervisor.removeProcessGroup(group)
    for group in changed:
        info = _program_info(home, group)
        was_running = bool(info and info["statename"] in ("RUNNING", "STARTING"))
        proxy.supervisor.stopProcessGroup(group)
        proxy.supervisor.removeProcessGroup(group)
        proxy.supervisor.addProcessGroup(group)
        # A changed group keeps the state it had: start-on-boot is about the next start.
        if was_running:
            _start_program(home, group, True)
        else:
            _stop_program(home, group)
    for group in added:
        proxy.supervisor.addProcessGroup(group)


@functools.lru_cache(maxsize=32)
def _version(ref: str) -> str:
    try:
        return str(load(ref)())
    except Exception as exc:  # a missing daemon or part must not break `status`
        return f"unknown ({type(exc).__name__})"


def status(home: Home, with_versions: bool = True) -> list[ServiceStatus]:
    running = supervisor_running(home)
    infos: dict[str, dict[str, Any]] = {}
    if running:
        for info in rpc(home).supervisor.getAllProcessInfo():
            infos[info["name"]] = info
    result = []
    for name in SERVICE_NAMES:
        spec = SERVICES[name]
        info = infos.get(spec.program)
        state = _STATE_MAP.get(info["statename"], "FATAL") if info else "STOPPED"
        pid = int(info["pid"]) if info and info["pid"] else None
        uptime = int(info["now"] - info["start"]) if info and state == "RUNNING" else 0
        if spec.control and state == "RUNNING":
            state = load(spec.control)(home, name, "status")
            if state != "RUNNING":
                pid, uptime = None, 0
        version = _version(spec.version) if with_versions else ""
        result.append(ServiceStatus(name, state, pid if state == "RUNNING" else None,
                                    uptime, version, spec.description))
    return result

"""The running Dovecot master of a node: is it up, which ports listen, reload, kick clients.

How mailyard knows the master runs: Dovecot writes its pid to `master.pid` in its base_dir
(HOME/var/dovecot). The master counts as running when that file names a live process whose
command name is `dovecot`; a pid file left behind by a crash, or one whose pid now belongs to
some other program, counts as "not running". Listening and connected sockets are read from
/proc/net/tcp and /proc/net/tcp6, which needs no connection to Dovecot and leaves no trace in
its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# How long a control action waits for Dovecot to open or close a listener after a reload.
# A reload takes well under a second here; the margin is for a machine under load.
LISTENER_WAIT_SECONDS = 15.0
POLL_SECONDS = 0.05
# doveadm answers in milliseconds; this only guards against a wedged master.
DOVEADM_TIMEOUT_SECONDS = 30.0

_TCP_LISTEN = "0A"
# Socket states that still carry a client: ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK...
_TCP_CONNECTED = {"01", "04", "05", "08", "09", "0B"}
_PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))

# Where Debian puts the daemon; supervisord's PATH may lack the sbin directories.
_EXTRA_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class DovecotMissing(RuntimeError):
    """Dovecot's programs are not installed."""


def program(name: str) -> str:
    """The full path of `dovecot`, `doveadm` or `doveconf`."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":" + _EXTRA_PATH)
    if not found:
        raise DovecotMissing(f"{name} is not installed; install Dovecot with `apt-get install "
                             "dovecot-imapd dovecot-pop3d dovecot-sqlite dovecot-pgsql`")
    return found


def pid_file(base_dir: Path) -> Path:
    return base_dir / "master.pid"


def _is_dovecot(pid: int) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return False
    except OSError:
        comm = ""
    if comm:
        return comm == "dovecot"
    try:  # no /proc entry readable: fall back to "is there such a process"
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def master_pid(base_dir: Path) -> int | None:
    """The pid of the running master, or None (no pid file, or a stale one)."""
    try:
        pid = int(pid_file(base_dir).read_text().strip() or "0")
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid > 0 and _is_dovecot(pid) else None


def remove_stale_pid_file(base_dir: Path) -> None:
    """Remove a pid file naming no running Dovecot (Dovecot refuses to start while the pid
    in it belongs to any live process)."""
    path = pid_file(base_dir)
    if path.exists() and master_pid(base_dir) is None:
        path.unlink(missing_ok=True)


def _sockets() -> list[tuple[int, str, int]]:
    """(local port, state, inode) of every TCP socket on the machine."""
    found: list[tuple[int, str, int]] = []
    for table in _PROC_NET:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            found.append((port, fields[3], int(fields[9])))
    return found


def listening(port: int) -> bool:
    return any(p == port and state == _TCP_LISTEN for p, state, _ in _sockets())


def wait_until(predicate: Callable[[], bool], timeout: float = LISTENER_WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)


def _children(parent: int) -> list[int]:
    result = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after it
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            result.append(int(entry.name))
    return result


def kick(master: int, port: int) -> int:
    """End every client connected to `port`: SIGTERM to each of the master's processes that
    holds such a connection (login processes proxying TLS, mail processes of plain clients).
    Returns how many processes were signalled."""
    inodes = {inode for p, state, inode in _sockets() if p == port and state in _TCP_CONNECTED}
    if not inodes:
        return 0
    wanted = {f"socket:[{inode}]" for inode in inodes}
    signalled = 0
    for pid in _children(master):
        try:
            links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except OSError:
            continue
        if links & wanted:
            try:
                os.kill(pid, signal.SIGTERM)
                signalled += 1
            except ProcessLookupError:
                pass
    return signalled


def _holds_listener(pid: int, listening_inodes: set[int]) -> bool:
    try:
        links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:
        return False  # gone meanwhile
    return any(f"socket:[{inode}]" in links for inode in listening_inodes)


def reload(conf: Path, base_dir: Path, timeout: float = LISTENER_WAIT_SECONDS) -> bool:
    """`doveadm reload` and wait until the master has switched to the new configuration.

    A reload is asynchronous (SIGHUP). It has taken effect once the master runs processes it
    did not have before (a new generation: config, auth, login processes) and none of its
    old processes still holds a listening socket, so no new client can reach a process of the
    old configuration. Old processes may live on while they serve their clients.
    Returns False when that did not happen within `timeout` (or the master is not running)."""
    pid = master_pid(base_dir)
    if pid is None:
        return False
    before = set(_children(pid))
    doveadm(conf, "reload")

    def switched() -> bool:
        current = set(_children(pid))
        if not current - before:
            return False
        inodes = {inode for _, state, inode in _sockets() if state == _TCP_LISTEN}
        return not any(_holds_listener(old, inodes) for old in current & before)

    return wait_until(switched, timeout)


def doveadm(conf: Path, *args: str) -> str:
    """Run `doveadm -c CONF ARGS`; its output, or RuntimeError with what it said."""
    try:
        done = subprocess.run([program("doveadm"), "-c", str(conf), *args], capture_output=True,
                              text=True, timeout=DOVEADM_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"doveadm {' '.join(args)} did not answer within "
                           f"{DOVEADM_TIMEOUT_SECONDS:.0f} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"doveadm {' '.join(args)} failed: "
                           f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


def service_limits(conf: Path) -> dict[str, tuple[int, int]]:
    """(process_limit, client_limit) of every service, as the running master has them."""
    result: dict[str, tuple[int, int]] = {}
    fields: dict[str, str] = {}
    lines = doveadm(conf, "service", "status").splitlines() + ["name: "]
    for line in lines:
        key, _, value = line.partition(": ")
        if key.strip() == "name":  # each service's record starts with its name
            if fields.get("name"):
                result[fields["name"]] = (int(fields.get("process_limit", 0)),
                                          int(fields.get("client_limit", 0)))
            fields = {}
        fields[key.strip()] = value.strip()
    return result

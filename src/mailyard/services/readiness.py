"""Is a service ready? Its own process (or a child of it) listens on each of its ports.

A connection test alone would be fooled by another program holding the port (the service then
fails to bind and exits, possibly after supervisord has called it RUNNING). So readiness looks
up the listening socket's inode in /proc/net/tcp{,6} and checks that the service's process tree
holds it. Without /proc (not Linux) it falls back to a connection test.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _tree(pid: int) -> set[int]:
    """`pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _holds(pids: set[int], inodes: set[str]) -> bool:
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return True
            except OSError:
                continue
    return False


# /proc/net/unix: the flag of a listening socket (__SO_ACCEPTCON).
_UNIX_ACCEPTING = 0x10000


def _unix_listening_inodes(path: Path) -> set[str]:
    inodes: set[str] = set()
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return inodes
    wanted = str(path)
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == wanted and int(fields[3], 16) & _UNIX_ACCEPTING:
            inodes.add(fields[6])
    return inodes


def serves_unix(pid: int, path: Path) -> bool:
    """True when process `pid` or one of its children listens on the unix socket `path`."""
    if not Path("/proc/net/unix").exists():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(str(path))
                return True
        except OSError:
            return False
    inodes = _unix_listening_inodes(path)
    return bool(inodes) and _holds(_tree(pid), inodes)


def serves(pid: int, port: int) -> bool:
    """True when process `pid` or one of its children listens on `port`."""
    if not Path("/proc/net/tcp").exists():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
    inodes = _listening_inodes(port)
    return bool(inodes) and _holds(_tree(pid), inodes)

"""Idle memory of the four Python services (smtp, submission, send, panel), as PSS.

Not a test. Needs root (the services start as root and drop to `mailyard`, and reading another
user's /proc/PID/smaps_rollup needs root). It makes a fresh node home, starts only those four
services under supervision (`control.up`, as `mailyard up` does), lets them settle, then reads
the proportional set size (`Pss:` of /proc/PID/smaps_rollup) of every process of each service,
the supervised process and all its descendants (every SMTP worker), a few times, and prints
the median per service and their sum. PSS divides shared pages among the processes sharing
them, so summing it over the workers counts a page they share once, unlike RSS. Run:

    .venv/bin/python bench/memory_bench.py --samples 5
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/memory_bench.py   # another checkout

The services run the `mailyard` package this interpreter imports (PYTHONPATH first), since
supervisord hands its environment to them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import mailyard  # a PYTHONPATH checkout or the installed package
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import mailyard

from mailyard.home import Home  # noqa: E402
from mailyard.nodeinit import init_home  # noqa: E402
from mailyard.services import control  # noqa: E402
from mailyard.store.db import dispose_all  # noqa: E402
from mailyard.store.settings_store import load_settings, set_many  # noqa: E402

MEASURED = ("smtp", "submission", "send", "panel")
# The others are switched off: this measures our Python services, not Dovecot or the filters.
OTHERS = ("pop3", "pop3s", "imap", "imaps", "spamd", "clamd", "freshclam")
# Seconds from "every service serves" to the first sample: imports and caches done at start.
SETTLE_SECONDS = 10.0
SAMPLE_INTERVAL_SECONDS = 2.0
UP_TIMEOUT_SECONDS = 120.0


def free_port_base() -> int:
    """A port base whose standard ports (25 … 2443 above it) are free now."""
    for base in range(20000, 60000, 3000):
        ok = True
        for port in (25, 465, 587, 110, 143, 993, 995, 2443):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("no free port base")


def children(pid: int) -> list[int]:
    """pid and every descendant of it."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent_of[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(p for p, parent in parent_of.items() if parent == current)
    return tree


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return 0  # a process that just ended
    return 0


def sample(home: Home) -> dict[str, tuple[int, int]]:
    """Per measured service: (PSS in KiB summed over its processes, how many processes)."""
    pids = {s.name: s.pid for s in control.status(home, with_versions=False)}
    result = {}
    for name in MEASURED:
        pid = pids.get(name)
        if not pid:
            raise SystemExit(f"service {name} is not running")
        tree = children(pid)
        result[name] = (sum(pss_kib(p) for p in tree), len(tree))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=5, help="readings, one every 2 s")
    parser.add_argument("--workers", type=int, default=None,
                        help="setting smtp.workers (default: the setting's default)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("memory_bench needs root (as a real server: the services drop root)")
    if not 1 <= args.samples <= 60:
        raise SystemExit(f"--samples {args.samples}: use 1 to 60")
    base = Path(tempfile.mkdtemp(prefix="mailyard-membench-", dir="/tmp"))
    os.chmod(base, 0o711)
    home, _ = init_home(base / "node", "mx.bench.test", port_base=free_port_base())
    values: dict[str, object] = {f"service.{n}.start_on_boot": n in MEASURED
                                 for n in MEASURED + OTHERS}
    if args.workers is not None:
        values["smtp.workers"] = args.workers
    set_many(home, values)
    workers = int(load_settings(home)["smtp.workers"])
    dispose_all()
    try:
        control.up(home, timeout=UP_TIMEOUT_SECONDS)
        time.sleep(SETTLE_SECONDS)
        readings = []
        for i in range(args.samples):
            if i:
                time.sleep(SAMPLE_INTERVAL_SECONDS)
            readings.append(sample(home))
    finally:
        control.down(home)
        shutil.rmtree(base, ignore_errors=True)
    print(f"mailyard from {Path(str(mailyard.__file__)).parent}; smtp.workers = {workers} "
          f"({'one per CPU: ' + str(os.cpu_count()) if workers == 0 else 'set'}); "
          f"load average {os.getloadavg()[0]:.1f}")
    total = 0.0
    for name in MEASURED:
        kib = statistics.median(r[name][0] for r in readings)
        count = readings[-1][name][1]
        total += kib
        print(f"  {name:<11} {kib / 1024:7.1f} MiB PSS over {count} process(es)")
    print(f"  {'together':<11} {total / 1024:7.1f} MiB PSS (median of {len(readings)} samples)")


if __name__ == "__main__":
    main()

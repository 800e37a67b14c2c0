"""Benchmark: the cost of SMTP-level scanning, in messages per second through check_message.

Not a test. It makes a throw-away node home under /tmp, starts the real spamd and clamd there
(as the node renders them; clamd with the local EICAR database unless --clamd-db points to a
directory with official databases), and times `mailyard.filters.smtp_level.check_message`
over the same set of spooled messages in four configurations: no scanning, ClamAV only,
SpamAssassin only, both. Each configuration runs with N concurrent callers, as the smtp
service would have N sessions at the end of DATA at once.

Run: .venv/bin/python bench/filters_bench.py [--messages 200] [--concurrency 1 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailyard.filters import clamd, clamscan, spamc, spamd
from mailyard.filters.smtp_level import check_message
from mailyard.home import STANDARD_PORTS, Home
from mailyard.nodeinit import init_home
from mailyard.store.settings_store import load_settings

READY_TIMEOUT = 120.0
WORDS = ("meeting budget report quarter invoice travel lunch project review schedule office "
         "team client update figures draft notes agenda call friday").split()


def free_port_base() -> int:
    import socket

    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        ok = True
        for port in STANDARD_PORTS.values():
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + port))
                except OSError:
                    ok = False
                    break
        if ok and base + max(STANDARD_PORTS.values()) < 65000:
            return base
    raise RuntimeError("no free port base")


def make_messages(directory: Path, count: int, size: int) -> list[Path]:
    """Plain business-like mail of about `size` bytes each (no spam, no virus): the common
    case, where every scanner has to look at the whole message."""
    rng = random.Random(7)
    paths = []
    for i in range(count):
        words = []
        while sum(len(w) + 1 for w in words) < size:
            words.append(rng.choice(WORDS))
        body = "\r\n".join(" ".join(words[j:j + 12]) for j in range(0, len(words), 12))
        data = (f"From: sender{i}@example.org\r\nTo: user@example.com\r\n"
                f"Subject: {rng.choice(WORDS)} {i}\r\nMessage-ID: <bench-{i}@example.org>\r\n"
                f"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\n{body}\r\n").encode()
        path = directory / f"msg{i}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def start(argv: list[str], log: Path, ready, home: Home) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while not asyncio.run(ready(home)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{argv[0]} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def run_config(home: Home, settings: dict, paths: list[Path],
                     concurrency: int) -> tuple[float, dict[str, int]]:
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    outcomes: dict[str, int] = {}

    async def worker() -> None:
        while True:
            try:
                path = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            reply = await check_message(home, settings, path, "sender@example.org",
                                        ["user@example.com"], "192.0.2.1")
            key = "accepted" if reply is None else str(reply[0])
            outcomes[key] = outcomes.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=4000, help="bytes per message body")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--clamd-db", type=Path, help="copy official databases from here")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mailyard-filters-bench-", dir="/tmp"))
    os.chmod(base, 0o711)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        home, _ = init_home(base / "node", "mx.example.test", port_base=free_port_base())
        if args.clamd_db:
            clamd.db_dir(home).mkdir(parents=True, exist_ok=True)
            for db in args.clamd_db.iterdir():
                if db.suffix in (".cvd", ".cld"):
                    shutil.copy(db, clamd.db_dir(home) / db.name)
        procs.append(start(spamd.exec_argv(home), base / "spamd.log",
                           lambda h: spamc.ping(h.port("spamd")), home))
        procs.append(start(clamd.exec_argv(home), base / "clamd.log",
                           lambda h: clamscan.ping(h.port("clamd")), home))
        from mailyard.filters.virusdb import summary

        spool = base / "spool"
        spool.mkdir()
        paths = make_messages(spool, args.messages, args.size)
        settings = load_settings(home)
        configs = {
            "no scanning": {"virus.smtp_scanning": False, "spam.smtp_scanning": False},
            "ClamAV only": {"virus.smtp_scanning": True, "spam.smtp_scanning": False},
            "SpamAssassin only": {"virus.smtp_scanning": False, "spam.smtp_scanning": True},
            "ClamAV + SpamAssassin": {"virus.smtp_scanning": True, "spam.smtp_scanning": True},
        }
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"Python {platform.python_version()}, {spamd.version()}, {clamd.version()}")
        print(f"# clamd database: {summary(home)}")
        print(f"# load average at start: {os.getloadavg()[0]:.1f} (other work on the machine)")
        print(f"# {args.messages} messages of about {args.size} bytes of body each")
        print("| configuration | concurrency | messages/s | ms/message | outcomes |")
        print("|---|---|---|---|---|")
        # warm up: spamd's children compile rules on first use
        asyncio.run(run_config(home, {**settings, **configs["ClamAV + SpamAssassin"]},
                               paths[:10], 2))
        for name, values in configs.items():
            for concurrency in args.concurrency:
                elapsed, outcomes = asyncio.run(run_config(home, {**settings, **values},
                                                           paths, concurrency))
                rate = len(paths) / elapsed
                print(f"| {name} | {concurrency} | {rate:,.0f} | "
                      f"{1000 * elapsed / len(paths):.2f} | {outcomes} |", flush=True)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

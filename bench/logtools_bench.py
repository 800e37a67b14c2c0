"""Benchmark of the log tools against awk doing the same count, with the memory of each stage.

Not part of the test suite.  Run from the repository root:

    .venv/bin/python bench/logtools_bench.py [--size-gb 1.0] [--dir DIR] [--timeout 900]

It writes two multilog directories of generated qmail-send logs, then times, in the same run:

  on one file of at least --size-gb (DIR/big/current):
    ours:  qmail-start-end 0 9999999999 --logdir DIR/big [| top-domain-stats --by recipient]
    awk:   mawk -f bench/logtools_count.awk DIR/big/current
    awk:   tai64nlocal < DIR/big/current | mawk -v local=1 -f bench/logtools_count.awk

  on a month of rotated logs (DIR/month: ten 16 MB files of three days each, and current):
    ours:  qmail-last-x '3 hours' --logdir DIR/month | top-domain-stats --by recipient
    awk:   cat DIR/month/@*.s DIR/month/current | tai64nlocal
               | mawk -v local=1 -v since='<3 hours ago>' -f bench/logtools_count.awk

Every report is checked against the others: messages, deliveries, successes, deferrals,
failures and bytes per recipient domain.  Each pipeline's wall time, the CPU time of all its
stages and the largest resident memory of each stage (getrusage of each process) are printed.
Each pipeline is killed after --timeout seconds, so the run is bounded.  No result is kept
between runs: every figure is a cold run of the tools (the page cache is what it is).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mailyard.logtools.tai64n import unix_to_tai64n  # noqa: E402

AWK_PROGRAM = ROOT / "bench" / "logtools_count.awk"
ROTATED_FILE_BYTES = 16 * 1024 * 1024  # what our LogDir (and many qmail sites) rotate at
ROTATED_FILES = 10
DAY = 86_400

DOMAINS = [f"domain{i}.example" for i in range(200)] + ["gmail.com", "yahoo.com", "hotmail.com"]
REPORTS = {
    "success": "192.0.2.{n}_accepted_message./Remote_host_said:_250_2.0.0_OK_queued_as_{n}/",
    "deferral": "Connected_to_192.0.2.{n}_but_greeting_failed./Remote_host_said:_421_busy/",
    "failure": "192.0.2.{n}_does_not_like_recipient./Remote_host_said:_550_5.1.1_no_such_user/"
               "Giving_up_on_192.0.2.{n}./",
}


def generate(path: Path, size: int, start: float, end: float, seed: int = 8) -> int:
    """Write a realistic qmail-send log of at least `size` bytes, stamped evenly from `start`
    to `end` (by bytes written); the number of lines."""
    rng = random.Random(seed)
    msg = 100_000 + seed * 10_000_000
    delivery = 0
    lines = 0
    written = 0
    with open(path, "w", buffering=1 << 20) as f:
        while written < size:
            chunk = []
            for _ in range(2000):
                msg += 1
                t = start + (end - start) * min(written / size, 1.0)
                stamp = "@" + unix_to_tai64n(t)
                sender = f"user{rng.randrange(5000)}@{rng.choice(DOMAINS)}"
                chunk.append(f"{stamp} new msg {msg}\n")
                chunk.append(f"{stamp} info msg {msg}: bytes {rng.randrange(500, 90000)} "
                             f"from <{sender}> qp {msg} uid 1001\n")
                for _r in range(rng.choice((1, 1, 1, 2, 3))):
                    delivery += 1
                    rcpt = f"rcpt{rng.randrange(20000)}@{rng.choice(DOMAINS)}"
                    channel = "local" if rng.random() < 0.3 else "remote"
                    chunk.append(f"{stamp} starting delivery {delivery}: msg {msg} to "
                                 f"{channel} {rcpt}\n")
                    chunk.append(f"{stamp} status: local 1/10 remote 3/20\n")
                    result = rng.choices(("success", "deferral", "failure"), (90, 7, 3))[0]
                    report = REPORTS[result].format(n=delivery % 250)
                    chunk.append(f"{stamp} delivery {delivery}: {result}: {report}\n")
                    chunk.append(f"{stamp} status: local 0/10 remote 2/20\n")
                chunk.append(f"{stamp} end msg {msg}\n")
            text = "".join(chunk)
            f.write(text)
            written += len(text)
            lines += len(chunk)
    return lines


@dataclass
class Run:
    seconds: float | None  # wall time; None: killed at the timeout
    cpu: float  # user + system seconds of every stage
    rss_mb: list[float]  # largest resident set of each stage
    out: str


def run_pipeline(stages: list[list[str]], env: dict[str, str], timeout: float,
                 stdin_path: Path | None = None) -> Run:
    """Run stages joined by pipes; the last one's output, times and each stage's memory."""
    procs: list[subprocess.Popen[bytes]] = []
    start = time.perf_counter()
    source = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    previous = source
    for argv in stages:
        p = subprocess.Popen(argv, stdin=previous, stdout=subprocess.PIPE, env=env,
                             process_group=0 if not procs else procs[0].pid)
        if procs and procs[-1].stdout is not None:
            procs[-1].stdout.close()
        procs.append(p)
        previous = p.stdout  # type: ignore[assignment]
    if stdin_path:
        source.close()  # type: ignore[union-attr]
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        try:
            os.killpg(procs[0].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    out = procs[-1].stdout.read() if procs[-1].stdout else b""  # type: ignore[union-attr]
    cpu = 0.0
    rss = []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        rss.append(usage.ru_maxrss / 1024)  # Linux reports kilobytes
    timer.cancel()
    seconds = None if killed.is_set() else time.perf_counter() - start
    return Run(seconds, cpu, rss, out.decode("utf-8", "surrogateescape"))


def counts(csv_text: str) -> dict[str, tuple[str, ...]]:
    """Per domain: messages, deliveries, successes, deferrals, failures, bytes."""
    rows = list(csv.reader(io.StringIO(csv_text)))
    return {r[0]: tuple(r[1:7]) for r in rows if r and r[0] != "domain"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--dir", type=Path, help="where to write the logs (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per pipeline")
    p.add_argument("--keep", action="store_true", help="keep the generated logs")
    args = p.parse_args()

    base = args.dir or Path(tempfile.mkdtemp(prefix="logtools-bench-"))
    big, month = base / "big", base / "month"
    big.mkdir(parents=True, exist_ok=True)
    month.mkdir(parents=True, exist_ok=True)
    now = time.time()
    t0 = time.perf_counter()
    nlines = generate(big / "current", int(args.size_gb * 1e9), now - 30 * DAY, now, seed=8)
    size = (big / "current").stat().st_size
    print(f"generated {size / 1e9:.2f} GB, {nlines} lines in {time.perf_counter() - t0:.0f} s")
    span = 3 * DAY
    month_files = []
    for k in range(ROTATED_FILES + 1):
        begin = now - (ROTATED_FILES + 1 - k) * span + span / 2
        end = min(begin + span, now)
        name = f"@{unix_to_tai64n(end)}.s" if k < ROTATED_FILES else "current"
        generate(month / name, ROTATED_FILE_BYTES, begin, end, seed=20 + k)
        month_files.append(month / name)
    month_bytes = sum(f.stat().st_size for f in month_files)
    print(f"month: {len(month_files)} files, {month_bytes / 1e6:.0f} MB, "
          f"{ROTATED_FILES * span // DAY} days")

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TZ="UTC")
    py = [sys.executable, "-m", "mailyard.logtools"]
    mawk = shutil.which("mawk") or "awk"
    local = shutil.which("tai64nlocal")
    top = [*py, "top-domain-stats", "--by", "recipient", "--csv"]
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 3 * 3600))
    awk = [mawk, "-f", str(AWK_PROGRAM)]
    awk_local = [mawk, "-v", "local=1", "-f", str(AWK_PROGRAM)]
    pipelines: dict[str, tuple[list[list[str]], Path | None, int]] = {
        "selector alone": ([[*py, "qmail-start-end", "0", "9999999999", "--logdir", str(big)],
                            ["wc", "-c"]], None, nlines),
        "selector | top-domain-stats": ([[*py, "qmail-start-end", "0", "9999999999",
                                          "--logdir", str(big)], top], None, nlines),
        "top-domain-stats -f (no selector)": ([[*top, "-f", str(big / "current")]], None,
                                              nlines),
        "mawk, same count": ([[*awk, str(big / "current")]], None, nlines),
        "tai64nlocal | mawk, same count": ([[local or "tai64nlocal"], awk_local],
                                           big / "current", nlines),
        "month: qmail-last-x '3 hours' | top": ([[*py, "qmail-last-x", "3 hours", "--logdir",
                                                  str(month)], top], None, 0),
        "month: cat | tai64nlocal | mawk since": ([["cat", *map(str, month_files)],
                                                   [local or "tai64nlocal"],
                                                   [*awk_local[:-2], "-v", f"since={since}",
                                                    "-f", str(AWK_PROGRAM)]], None, 0),
    }
    results: dict[str, Run] = {}
    for name, (stages, stdin_path, lines) in pipelines.items():
        if local is None and "tai64nlocal" in name:
            print(f"{name:40} skipped: tai64nlocal not installed (Debian: daemontools)")
            continue
        r = run_pipeline(stages, env, args.timeout, stdin_path)
        results[name] = r
        if r.seconds is None:
            print(f"{name:40} timed out")
            continue
        rate = f"{lines / r.seconds:12,.0f} lines/s" if lines else " " * 20
        rss = " + ".join(f"{m:.0f}" for m in r.rss_mb)
        print(f"{name:40} {rate} {r.seconds:7.2f} s wall {r.cpu:7.2f} s CPU  max RSS MB: {rss}")

    ours = counts(results["selector | top-domain-stats"].out)
    for other in ("top-domain-stats -f (no selector)", "mawk, same count",
                  "tai64nlocal | mawk, same count"):
        if other in results and results[other].seconds is not None:
            same = counts(results[other].out) == ours
            print(f"same counts (messages, deliveries, results, bytes) as {other}: "
                  f"{'yes' if same else 'NO'}")
    a = results.get("month: qmail-last-x '3 hours' | top")
    b = results.get("month: cat | tai64nlocal | mawk since")
    if a and b and a.seconds and b.seconds:
        print(f"month, last 3 hours: same counts: {'yes' if counts(a.out) == counts(b.out) else 'NO'}"
              f" ({sum(int(r[1]) for r in counts(a.out).values())} deliveries)")
    m = results.get("mawk, same count")
    o = results.get("selector | top-domain-stats")
    if m and o and m.seconds and o.seconds:
        print(f"selector | top-domain-stats against mawk: {m.seconds / o.seconds:.2f}x wall, "
              f"{m.cpu / o.cpu:.2f}x CPU")
    alone = results.get("top-domain-stats -f (no selector)")
    if m and alone and m.seconds and alone.seconds:
        print(f"top-domain-stats -f against mawk: {m.seconds / alone.seconds:.2f}x wall, "
              f"{m.cpu / alone.cpu:.2f}x CPU")
    core = subprocess.run([sys.executable, "-c", "from mailyard.logtools import blocks; "
                           "print('compiled (_fastcount)' if blocks.NATIVE else 'pure Python')"],
                          env=env, capture_output=True, text=True)
    print(f"top-* counting core: {core.stdout.strip() or core.stderr.strip()}")
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
          f"Python {platform.python_version()}, {platform.platform()}")
    if not args.keep and args.dir is None:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the log tools: lines per second of `selector | top-domain-stats` against awk.

Not part of the test suite.  Run from the repository root:

    .venv/bin/python bench/logtools_bench.py [--size-gb 1.0] [--dir DIR] [--timeout 900]

It writes a multilog directory with a generated qmail-send log of at least --size-gb, then
times, in the same run and on the same file:

  ours:  qmail-start-end 0 9999999999 --logdir DIR | top-domain-stats --by recipient --csv
  awk:   awk '<the same per-domain count of deliveries and results>' DIR/current

and checks that both count the same deliveries, successes, deferrals and failures per
recipient domain (our tool also counts messages and bytes; awk does not).  Each command is
killed after --timeout seconds, so the run is bounded.  Results go to stdout; copy them into
bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mailyard.logtools.tai64n import unix_to_tai64n  # noqa: E402

DOMAINS = [f"domain{i}.example" for i in range(200)] + ["gmail.com", "yahoo.com", "hotmail.com"]
REPORTS = {
    "success": "192.0.2.{n}_accepted_message./Remote_host_said:_250_2.0.0_OK_queued_as_{n}/",
    "deferral": "Connected_to_192.0.2.{n}_but_greeting_failed./Remote_host_said:_421_busy/",
    "failure": "192.0.2.{n}_does_not_like_recipient./Remote_host_said:_550_5.1.1_no_such_user/"
               "Giving_up_on_192.0.2.{n}./",
}

AWK = r"""
$2 == "starting" { split($9, a, "@"); dom[$3 " " $4] = tolower(a[2]) ; next }
$2 == "delivery" {
  k = "delivery " $3; d = dom[k]
  if (d == "") next
  n[d]++
  if ($4 == "success:") s[d]++; else if ($4 == "deferral:") f[d]++; else if ($4 == "failure:") x[d]++
  delete dom[k]
}
END { for (d in n) printf "%s,%d,%d,%d,%d\n", d, n[d], s[d] + 0, f[d] + 0, x[d] + 0 }
"""


def generate(path: Path, size: int, seed: int = 8) -> int:
    """Write a realistic qmail-send log of at least `size` bytes; the number of lines."""
    rng = random.Random(seed)
    t = 1_700_000_000.0
    msg = 100_000
    delivery = 0
    lines = 0
    written = 0
    with open(path, "w", buffering=1 << 20) as f:
        while written < size:
            chunk = []
            for _ in range(2000):
                msg += 1
                t += rng.random() * 0.05
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
                    t += rng.random() * 0.05
                    stamp = "@" + unix_to_tai64n(t)
                    report = REPORTS[result].format(n=delivery % 250)
                    chunk.append(f"{stamp} delivery {delivery}: {result}: {report}\n")
                    chunk.append(f"{stamp} status: local 0/10 remote 2/20\n")
                chunk.append(f"{stamp} end msg {msg}\n")
            text = "".join(chunk)
            f.write(text)
            written += len(text)
            lines += len(chunk)
    return lines


def timed(command: str, timeout: float) -> tuple[float | None, str]:
    """Seconds a shell command took and its stdout; None seconds if it hit the timeout."""
    start = time.perf_counter()
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return None, ""
    return time.perf_counter() - start, out


def counts(csv_text: str, columns: slice) -> dict[str, tuple[str, ...]]:
    rows = list(csv.reader(io.StringIO(csv_text)))
    return {r[0]: tuple(r[columns]) for r in rows if r and r[0] != "domain"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--dir", type=Path, help="where to write the log (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per command")
    p.add_argument("--keep", action="store_true", help="keep the generated log")
    args = p.parse_args()

    base = args.dir or Path(tempfile.mkdtemp(prefix="logtools-bench-"))
    logdir = base / "send"
    logdir.mkdir(parents=True, exist_ok=True)
    current = logdir / "current"
    t0 = time.perf_counter()
    nlines = generate(current, int(args.size_gb * 1e9))
    size = current.stat().st_size
    print(f"generated {size / 1e9:.2f} GB, {nlines} lines in {time.perf_counter() - t0:.0f} s")

    py = sys.executable
    env = f"PYTHONPATH={ROOT / 'src'} TZ=UTC"
    tool = f"{env} {py} -m mailyard.logtools"
    awk = shutil.which("mawk") or "awk"
    commands = {
        "selector alone": f"{tool} qmail-start-end 0 9999999999 --logdir {logdir} >/dev/null",
        "selector | top-domain-stats": f"{tool} qmail-start-end 0 9999999999 --logdir {logdir}"
                                       f" | {tool} top-domain-stats --by recipient --csv",
        f"{os.path.basename(awk)} (same count)": f"{awk} '{AWK}' {current}",
    }
    results: dict[str, tuple[float | None, str]] = {}
    for name, command in commands.items():
        seconds, out = timed(command, args.timeout)
        results[name] = (seconds, out)
        rate = f"{nlines / seconds:,.0f} lines/s ({seconds:.1f} s)" if seconds else "timed out"
        print(f"{name:32} {rate}")

    ours = counts(results["selector | top-domain-stats"][1], slice(2, 6))
    theirs = counts(results[f"{os.path.basename(awk)} (same count)"][1], slice(1, 5))
    if ours and theirs:
        print("same counts per domain:", "yes" if ours == theirs else "NO")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.platform()}")
    if not args.keep and args.dir is None:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())

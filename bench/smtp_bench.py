"""SMTP acceptance benchmark: messages per second accepted and durably queued, mailyard vs Postfix.

Not a test. Needs root (Postfix's master runs as root; our service drops to `mailyard`), the
Debian package `postfix` (for /usr/sbin/smtp-source, smtp-sink and the peer itself).

    .venv/bin/python bench/smtp_bench.py [--messages 1000] [--sessions 10,100] [--size 2000]
                                         [--rounds 3]

Each round sends the same load with Postfix's own load generator, smtp-source (one message
per connection, `--sessions` connections at a time), to three servers on loopback, mailyard
and Postfix in alternating order from round to round:

* mailyard's `smtp` service as `make run` starts it (its default worker count), in a fresh
  node home, its connection cap raised to 250; a message counts once it is in queue/todo
  (written and fsynced, file and directory, before the 250);
* a private Postfix instance with bench/postfix/main.cf and master.cf (its own queue
  directory, chroot off, process and connection limits raised): recipient validation through
  a `virtual_mailbox_maps` hash map of the one mailbox, as mailyard validates at RCPT, and
  every message put on hold (`smtpd_end_of_data_restrictions = check_client_access
  static:HOLD`), so both servers do the same work: validate, accept, write durably, reply;
* smtp-sink, which accepts and throws away: the ceiling of the load generator here.

For each server it also reads the CPU time of the server's whole process tree over the load
(every process under it, threads included, and the children it reaped: for Postfix the
master, smtpd, cleanup, qmgr, trivial-rewrite, proxymap and anvil) and prints CPU ms per
message, and the ratio of mailyard to Postfix. It checks that every message really is in each
queue, prints a Markdown table with the median of the rounds, and stops everything it
started. Bounded: each run has a time limit.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from mailyard.home import STANDARD_PORTS, Home  # noqa: E402
from mailyard.nodeinit import init_home  # noqa: E402
from mailyard.services.privileges import mail_owner  # noqa: E402
from mailyard.store.accounts import add_domain, add_mailbox  # noqa: E402
from mailyard.store.db import dispose_all  # noqa: E402
from mailyard.store.settings_store import set_setting  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
RUN_TIMEOUT = 300.0  # seconds one load may take before the benchmark gives up
START_TIMEOUT = 60.0
RECIPIENT = "joe@example.org"
SENDER = "load@remote.test"
POSTFIX_CONF = REPO / "bench" / "postfix"
# mailyard's connection cap for the benchmark (20 by default): above the largest load.
MAX_CONNECTIONS = 250
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every process under it, including children they reaped."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(f) for f in fields[11:15]) / _TICK  # utime stime cutime cstime
    total = 0.0
    for pid, cpu in times.items():
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += cpu
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_base() -> int:
    for base in range(30000, 60000, 10):
        ok = True
        for p in STANDARD_PORTS.values():
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port base")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def load(port: int, messages: int, sessions: int, size: int) -> float:
    """Seconds smtp-source takes to hand over all messages."""
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {out.stdout}{out.stderr}")
    return elapsed


def count_files(directory: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(directory))


def wait_workers(home: Home) -> None:
    """The port listens as soon as the smtp parent has bound it; a load starts once every
    worker serves (their start-up is not the load's CPU). e2e_bench.py uses it too."""
    log = home.service_log_dir("smtp") / "current"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        match = re.search(r" workers=(\d+)", text)
        if match and (match.group(1) == "1" or
                      text.count("worker-start ") >= int(match.group(1))):
            return
        time.sleep(0.05)
    raise RuntimeError("mailyard smtp: the workers did not start")


# ---- mailyard ----------------------------------------------------------------------------------


class Mailyard:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.home: Home | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        home, _ = init_home(self.base / "node", "mx.example.test", port_base=free_base())
        add_domain(home, "example.org")
        add_mailbox(home, RECIPIENT, "benchmark password 1")
        set_setting(home, "smtp.max_connections", MAX_CONNECTIONS)
        dispose_all()
        if os.geteuid() == 0:  # the service drops to the mail owner, which reads the store
            uid, gid = mail_owner()
            os.chown(home.root, uid, gid)
            for path in home.root.glob("store.sqlite*"):
                os.chown(path, uid, gid)
        self.home = home
        code = ("from mailyard.home import Home; from mailyard.smtp.service import run_smtp; "
                f"run_smtp(Home.find({str(home.root)!r}))")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        port = home.port("smtp")
        wait_port(port, self.proc, "mailyard smtp")
        wait_workers(home)
        return port

    def queued(self) -> int:
        assert self.home is not None
        return count_files(self.home.queue_dir / "todo")

    def stop(self) -> None:
        stop(self.proc)


# ---- Postfix -----------------------------------------------------------------------------------


class Postfix:
    def __init__(self, base: Path) -> None:
        self.dir = base / "postfix"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        d = self.dir
        (d / "queue").mkdir(parents=True)
        (d / "data").mkdir()
        shutil.chown(d / "data", "postfix")
        port = free_port()
        values = {"@QUEUE@": str(d / "queue"), "@DATA@": str(d / "data"), "@MAPS@": str(d),
                  "@PORT@": str(port)}
        for name in ("main.cf", "master.cf"):
            text = (POSTFIX_CONF / name).read_text()
            for key, value in values.items():
                text = text.replace(key, value)
            (d / name).write_text(text)
        (d / "virtual_mailboxes").write_text(f"{RECIPIENT} example.org/joe/\n")
        subprocess.run(["postmap", "-c", str(d), f"hash:{d / 'virtual_mailboxes'}"],
                       check=True)
        subprocess.run(["postfix", "-c", str(d), "check"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen([POSTFIX_MASTER, "-c", str(d), "-d"],
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(port, self.proc, "postfix master")
        return port

    def queued(self) -> int:
        return count_files(self.dir / "queue" / "hold")

    def stop(self) -> None:
        stop(self.proc)
        maillog = self.dir / "data" / "maillog"
        if not maillog.exists() or maillog.stat().st_size == 0:  # it must log, as we do
            raise RuntimeError(f"postfix wrote no log to {maillog}")


class Sink:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        port = free_port()
        self.proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{port}", "256"],
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(port, self.proc, "smtp-sink")
        return port

    def stop(self) -> None:
        stop(self.proc)


def wait_queued(server: Mailyard | Postfix, expected: int) -> int:
    """Both servers have replied 250 for every message; their queues must now hold them all
    (Postfix's cleanup may still be renaming into hold for a moment)."""
    deadline = time.monotonic() + 30
    count = server.queued()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        count = server.queued()
    return count


MAILYARD, POSTFIX, SINK = "mailyard smtp", "Postfix 3.7 (hold queue)", "smtp-sink (no queue)"


def one_round(base: Path, order: list[str], messages: int, sessions: int, size: int,
              round_: int) -> dict[str, tuple[float, float]]:
    """{server: (messages/s, CPU ms per message)} for one round, in the given order."""
    makers = {MAILYARD: lambda: Mailyard(base), POSTFIX: lambda: Postfix(base), SINK: Sink}
    out: dict[str, tuple[float, float]] = {}
    for name in order:
        server = makers[name]()
        try:
            port = server.start()
            assert server.proc is not None
            cpu_before = tree_cpu(server.proc.pid)
            seconds = load(port, messages, sessions, size)
            if not isinstance(server, Sink):
                got = wait_queued(server, messages)
                if got != messages:
                    raise RuntimeError(f"{name}: {got} of {messages} messages queued")
            cpu_ms = (tree_cpu(server.proc.pid) - cpu_before) * 1000 / messages
        finally:
            server.stop()
        rate = messages / seconds
        out[name] = (rate, cpu_ms)
        print(f"round {round_}, {sessions} sessions: {name}: {messages} messages in "
              f"{seconds:.2f} s = {rate:.0f} msg/s, {cpu_ms:.2f} CPU ms/message", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", default="10,100",
                        help="parallel sessions, comma-separated: one table each")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("smtp_bench: run as root (Postfix's master needs it)")
    for tool in (SMTP_SOURCE, SMTP_SINK, POSTFIX_MASTER):
        if not Path(tool).exists():
            sys.exit(f"smtp_bench: {tool} is missing; apt-get install postfix")
    tables = []
    # Each round's directories are removed only at the end of the run: this machine's ext4
    # has no journal, and there a new inode skips every inode of its block group deleted in
    # the last minute (five while the inode table block is dirty), scanning from the start of
    # the group for each file created; removing a round's queues at once would make every
    # file the next rounds create pay for that scan (about 0.5 ms of CPU per message by the
    # third round, more for mailyard's two files per message than for Postfix's one).
    kept: list[Path] = []
    try:
        run_all(args, tables, kept)
    finally:
        for base in kept:
            shutil.rmtree(base, ignore_errors=True)
    print_tables(args, tables)


def run_all(args: argparse.Namespace,
            tables: list[tuple[int, dict[str, list[tuple[float, float]]]]],
            kept: list[Path]) -> None:
    for sessions in (int(n) for n in args.sessions.split(",")):
        results: dict[str, list[tuple[float, float]]] = {MAILYARD: [], POSTFIX: [], SINK: []}
        for round_ in range(1, args.rounds + 1):
            order = [MAILYARD, POSTFIX] if round_ % 2 else [POSTFIX, MAILYARD]
            base = Path(tempfile.mkdtemp(prefix="mailyard-smtp-bench-", dir="/tmp"))
            os.chmod(base, 0o755)
            kept.append(base)
            got = one_round(base, order + [SINK], args.messages, sessions, args.size, round_)
            for name, value in got.items():
                results[name].append(value)
        tables.append((sessions, results))


def print_tables(args: argparse.Namespace,
                 tables: list[tuple[int, dict[str, list[tuple[float, float]]]]]) -> None:
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    print()
    for sessions, results in tables:
        print(f"{args.messages} messages of {args.size} octets, {sessions} parallel sessions, "
              f"one message per connection; median of {args.rounds} rounds, mailyard and "
              "Postfix in alternating order")
        print()
        print("| server | messages/s (median) | CPU ms/message (median) | rounds (msg/s) |")
        print("|---|---:|---:|---|")
        for name, values in results.items():
            rates = [r for r, _ in values]
            cpus = [c for _, c in values]
            print(f"| {name} | {statistics.median(rates):.0f} | {statistics.median(cpus):.2f} | "
                  f"{', '.join(f'{r:.0f}' for r in rates)} |")
        ours = statistics.median(r for r, _ in results[MAILYARD])
        theirs = statistics.median(r for r, _ in results[POSTFIX])
        our_cpu = statistics.median(c for _, c in results[MAILYARD])
        their_cpu = statistics.median(c for _, c in results[POSTFIX])
        print()
        print(f"mailyard : Postfix = {ours / theirs:.2f} (messages/s), "
              f"{our_cpu / their_cpu:.2f} (CPU per message)")
        print()


if __name__ == "__main__":
    main()

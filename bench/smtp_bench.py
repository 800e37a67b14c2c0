"""SMTP acceptance benchmark: messages per second accepted and durably queued, mailyard vs Postfix.

Not a test. Needs root (Postfix's master runs as root; our service drops to `mailyard`), the
Debian package `postfix` (for /usr/sbin/smtp-source, smtp-sink and the peer itself).

    .venv/bin/python bench/smtp_bench.py [--messages 1000] [--sessions 10] [--size 2000]
                                         [--rounds 3]

Each round sends the same load with Postfix's own load generator, smtp-source (one message
per connection, `--sessions` connections at a time), to three servers on loopback:

* mailyard's `smtp` service, in a fresh node home; a message counts once it is in queue/todo
  (written and fsynced, file and directory, before the 250);
* a private Postfix instance (its own config and queue directory, chroot off) that puts every
  message on hold (`smtpd_end_of_data_restrictions = check_client_access static:HOLD`), so
  both servers do the same work: accept, write durably, reply; nothing is delivered;
* smtp-sink, which accepts and throws away: the ceiling of the load generator here.

It checks that every message really is in each queue, prints a Markdown table with the median
of the rounds, and stops everything it started. Bounded: each run has a time limit.
"""

from __future__ import annotations

import argparse
import os
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

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
RUN_TIMEOUT = 300.0  # seconds one load may take before the benchmark gives up
START_TIMEOUT = 60.0
RECIPIENT = "joe@example.org"
SENDER = "load@remote.test"


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
        master_cf = Path("/etc/postfix/master.cf").read_text().splitlines()
        lines = []
        for line in master_cf:
            if line.startswith("smtp ") and " inet " in f" {line} ":
                line = f"127.0.0.1:{port} inet n - n - - smtpd"
            lines.append(line)
        (d / "master.cf").write_text("\n".join(lines) + "\n")
        (d / "main.cf").write_text("")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(d / "queue"),
            "data_directory": str(d / "data"),
            "meta_directory": "/etc/postfix",
            "myhostname": "bench.example.test",
            "mydestination": "example.org",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_end_of_data_restrictions": "check_client_access static:HOLD",
            "smtputf8_enable": "no",
        }
        subprocess.run(["postconf", "-c", str(d), "-e",
                        *(f"{k}={v}" for k, v in settings.items())], check=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("smtp_bench: run as root (Postfix's master needs it)")
    for tool in (SMTP_SOURCE, SMTP_SINK, POSTFIX_MASTER):
        if not Path(tool).exists():
            sys.exit(f"smtp_bench: {tool} is missing; apt-get install postfix")
    results: dict[str, list[float]] = {"mailyard smtp": [], "Postfix 3.7 (hold queue)": [],
                                       "smtp-sink (no queue)": []}
    for round_ in range(1, args.rounds + 1):
        base = Path(tempfile.mkdtemp(prefix="mailyard-smtp-bench-", dir="/tmp"))
        os.chmod(base, 0o755)
        servers: list[tuple[str, Mailyard | Postfix | Sink]] = [
            ("mailyard smtp", Mailyard(base)), ("Postfix 3.7 (hold queue)", Postfix(base)),
            ("smtp-sink (no queue)", Sink())]
        try:
            for name, server in servers:
                port = server.start()
                seconds = load(port, args.messages, args.sessions, args.size)
                if not isinstance(server, Sink):
                    got = wait_queued(server, args.messages)
                    if got != args.messages:
                        raise RuntimeError(f"{name}: {got} of {args.messages} messages queued")
                server.stop()
                rate = args.messages / seconds
                results[name].append(rate)
                print(f"round {round_}: {name}: {args.messages} messages in {seconds:.2f} s "
                      f"= {rate:.0f} msg/s", flush=True)
        finally:
            for _, server in servers:
                server.stop()
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(f"{args.messages} messages of {args.size} octets, {args.sessions} parallel sessions, "
          f"one message per connection; median of {args.rounds} rounds")
    print()
    print("| server | messages/s (median) | rounds |")
    print("|---|---:|---|")
    for name, rates in results.items():
        print(f"| {name} | {statistics.median(rates):.0f} | "
              f"{', '.join(f'{r:.0f}' for r in rates)} |")


if __name__ == "__main__":
    main()

"""End-to-end throughput: messages from SMTP into a Maildir, mailyard against Postfix.

Not a test. Needs root (Postfix's master runs as root; our services drop to `mailyard`) and
the Debian package `postfix` (for `smtp-source` and the peer). In each round the same load,
Postfix's `smtp-source` (N messages of SIZE octets, S parallel sessions, one message per
connection, all to one mailbox), goes to:

* mailyard: the `smtp` and `send` services of a fresh node home; a message counts when its
  file is in the mailbox's Maildir/new (written, fsynced, renamed, directory fsynced);
* a private Postfix 3.7 (own config and queue directory, chroot off) delivering to the same
  kind of mailbox with its `virtual` agent (Maildir, one file per message).

Each side is timed from the first connection to the last message in the Maildir ("end to
end") and to smtp-source's exit ("accepted"), and the CPU of each server's whole process
trees over that time is summed (Postfix's master, smtpd, cleanup, trivial-rewrite, qmgr and
virtual; mailyard's smtp and send). Postfix validates recipients against a hash
`virtual_mailbox_maps`, as mailyard does against its store. The order of the two servers
alternates between rounds. Mailbox-level spam scanning is switched off
for mailyard (Postfix runs no content filter here either). Run:

    .venv/bin/python bench/e2e_bench.py --messages 1000 --rounds 3
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from smtp_bench import wait_workers  # noqa: E402 (this folder: the script's own)

from mailyard.home import Home  # noqa: E402
from mailyard.nodeinit import init_home  # noqa: E402
from mailyard.queue import Envelope, Queue  # noqa: E402
from mailyard.services.privileges import mail_owner  # noqa: E402
from mailyard.store.accounts import add_domain, add_mailbox  # noqa: E402
from mailyard.store.db import dispose_all  # noqa: E402
from mailyard.store.settings_store import set_setting  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
SENDER = "bench@source.test"
RECIPIENT = "user@bench.test"
# Longest wait for a round to finish before it is declared failed (a stuck server).
ROUND_TIMEOUT = 900.0


@dataclass
class Round:
    accepted_s: float
    end_to_end_s: float
    cpu_s: float = 0.0  # CPU of the server's whole process trees over the round
    cpu_parts: tuple[float, ...] = ()  # the same per tree (mailyard: send, smtp)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def session_cpu(sessions: list[int]) -> float:
    """CPU seconds (user + system) of every process in these sessions, with the time of
    children they already reaped: the difference of two readings is the CPU used between them,
    also by processes that were born and ended in between (their parent's cutime/cstime)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[3]) in sessions:  # field 6 of stat: the session id
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_base() -> int:
    """A port base with 25 + base free (only the smtp listener is started)."""
    for base in range(31000, 60000, 10):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 25))
            except OSError:
                continue
        return base
    raise RuntimeError("no free port base")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)
    except ProcessLookupError:
        pass


def count(directory: Path) -> int:
    try:
        return len(os.listdir(directory))
    except FileNotFoundError:
        return 0


def run_load(port: int, new_dir: Path, messages: int, sessions: int, size: int,
             trees: list[int]) -> Round:
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"]
    cpu_before = [session_cpu([t]) for t in trees]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=ROUND_TIMEOUT)
    accepted = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {out.stdout}{out.stderr}")
    deadline = started + ROUND_TIMEOUT
    while count(new_dir) < messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count(new_dir)} of {messages} messages in {new_dir}")
        time.sleep(0.01)
    done = time.monotonic() - started
    parts = tuple(session_cpu([t]) - b for t, b in zip(trees, cpu_before, strict=True))
    if count(new_dir) != messages:
        raise RuntimeError(f"{count(new_dir)} messages in {new_dir}, expected {messages}")
    return Round(accepted, done, sum(parts), parts)


# ---- mailyard ----------------------------------------------------------------------------------


class Mailyard:
    name = "mailyard (smtp + send)"

    def __init__(self, base: Path, local_concurrency: int = 0) -> None:
        self.base = base
        self.procs: list[subprocess.Popen[bytes]] = []
        self.home: Home | None = None
        self.local_concurrency = local_concurrency  # 0: the node's default

    def start(self, queued: int = 0, size: int = 2000) -> tuple[int, Path]:
        """Start smtp and send; with `queued`, put that many messages in the queue first
        (send then delivers them as soon as it starts)."""
        home, _ = init_home(self.base / "node", "mx.bench.test", port_base=free_base())
        add_domain(home, "bench.test")
        add_mailbox(home, RECIPIENT, "benchmark password 1")
        set_setting(home, "spam.mailbox_scanning", False)
        if self.local_concurrency:
            set_setting(home, "send.local_concurrency", self.local_concurrency)
        dispose_all()
        uid, gid = mail_owner()
        os.chown(home.root, uid, gid)
        for path in home.root.glob("store.sqlite*"):
            os.chown(path, uid, gid)
        for path in (home.etc_dir, home.run_dir, home.var_dir):
            os.chown(path, uid, gid)
        self.home = home
        if queued:
            body = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: queued\r\n\r\n"
                    .encode() + b"x" * 76 + b"\r\n") * max(1, size // 80)
            queue = Queue(home.queue_dir)
            for _ in range(queued):
                with queue.open_message() as w:
                    w.write(body)
                    w.commit(Envelope(sender=SENDER, recipients=[RECIPIENT]))
        for module, func in (("mailyard.delivery.service", "run"),
                             ("mailyard.smtp.service", "run_smtp")):
            code = (f"from mailyard.home import Home; from {module} import {func}; "
                    f"{func}(Home.find({str(home.root)!r}))")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", code], cwd=REPO, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        port = home.port("smtp")
        wait_port(port, self.procs[1], "mailyard smtp")
        wait_workers(home)
        deadline = time.monotonic() + 60
        while not (home.service_log_dir("send") / "current").exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("mailyard send did not start")
            time.sleep(0.05)
        return port, home.maildir(RECIPIENT) / "new"

    def trees(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)


# ---- Postfix -----------------------------------------------------------------------------------


class Postfix:
    name = "Postfix 3.7 (virtual, Maildir)"

    def __init__(self, base: Path) -> None:
        self.dir = base / "postfix"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> tuple[int, Path]:
        d = self.dir
        (d / "queue").mkdir(parents=True)
        (d / "data").mkdir()
        (d / "mail").mkdir()
        shutil.chown(d / "data", "postfix")
        uid, gid = mail_owner()
        os.chown(d / "mail", uid, gid)
        port = free_port()
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
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
            "myhostname": "pf.bench.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1",
            "alias_maps": "",
            "alias_database": "",
            "smtputf8_enable": "no",
            "virtual_mailbox_domains": "bench.test",
            "virtual_mailbox_base": str(d / "mail"),
            "virtual_mailbox_maps": f"hash:{d}/vmailbox",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "virtual_minimum_uid": "100",
            # Log to a file, as mailyard does (no syslog daemon here): postlogd writes it.
            "maillog_file": str(d / "data" / "maillog"),
            "maillog_file_prefixes": str(d / "data"),
        }
        (d / "vmailbox").write_text(f"{RECIPIENT} bench.test/user/Maildir/\n")
        subprocess.run(["postconf", "-c", str(d), "-e",
                        *(f"{k}={v}" for k, v in settings.items())], check=True)
        subprocess.run(["postmap", "-c", str(d), f"hash:{d}/vmailbox"], check=True)
        subprocess.run(["postconf", "-c", str(d), "-F", "*/*/chroot = n"], check=True)
        subprocess.run(["postfix", "-c", str(d), "check"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen([POSTFIX_MASTER, "-c", str(d), "-d"],
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(port, self.proc, "postfix master")
        return port, d / "mail" / "bench.test" / "user" / "Maildir" / "new"

    def trees(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def stop(self) -> None:
        stop(self.proc)


# Every round's directories, removed only when the whole run has ended: on a filesystem without
# a journal (these machines' ext4) the inode allocator skips inodes freed in the last minute,
# so removing a round's files would make every file the next rounds create cost more
# (bench/README.md, "Why mailyard's CPU per message rose from round to round").
_BASES: list[Path] = []


def measure(kind: type[Mailyard] | type[Postfix], args: argparse.Namespace) -> Round:
    base = Path(tempfile.mkdtemp(prefix="mailyard-e2e-"))
    os.chmod(base, 0o755)
    server = Mailyard(base, args.local_concurrency) if kind is Mailyard else kind(base)
    try:
        port, new_dir = server.start()
        profiler = None
        if args.profile and isinstance(server, Mailyard):
            profiler = start_profile(server, args.profile)
        try:
            return run_load(port, new_dir, args.messages, args.sessions, args.size,
                            server.trees())
        finally:
            for proc in profiler or []:
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
    finally:
        server.stop()
        dispose_all()
        _BASES.append(base)


def measure_queued(args: argparse.Namespace) -> Round:
    """send alone: the messages are queued before it starts. Timed and its CPU counted from
    the first file in the Maildir to the last (so its start-up is left out), per message
    delivered in that time."""
    base = Path(tempfile.mkdtemp(prefix="mailyard-e2e-"))
    os.chmod(base, 0o755)
    server = Mailyard(base, args.local_concurrency)
    try:
        _, new_dir = server.start(queued=args.messages, size=args.size)
        send = server.procs[0].pid
        profiler = start_profile(server, args.profile) if args.profile else None
        deadline = time.monotonic() + ROUND_TIMEOUT
        while count(new_dir) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("nothing delivered")
            time.sleep(0.001)
        first, cpu_first, already = time.monotonic(), session_cpu([send]), count(new_dir)
        while count(new_dir) < args.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {count(new_dir)} of {args.messages} delivered")
            time.sleep(0.01)
        done = time.monotonic() - first
        cpu = session_cpu([send]) - cpu_first
        for proc in profiler or []:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        scale = args.messages / max(1, args.messages - already)  # as if for all N
        return Round(done * scale, done * scale, cpu * scale, (cpu * scale, 0.0))
    finally:
        server.stop()
        dispose_all()
        _BASES.append(base)


def start_profile(server: Mailyard, prefix: str) -> list[subprocess.Popen[bytes]]:
    """py-spy on mailyard's send and smtp processes (the smtp workers included), raw stacks of
    the samples holding the GIL (Python's CPU) into PREFIX-send.txt and PREFIX-smtp.txt
    (summarise them with bench/profile_summary.py)."""
    out = []
    for proc, name in zip(server.procs, ("send", "smtp"), strict=True):
        out.append(subprocess.Popen(
            ["py-spy", "record", "--nonblocking", "--gil", "--subprocesses", "--format", "raw",
             "--rate", "200",
             "-o", f"{prefix}-{name}.txt", "-p", str(proc.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # let py-spy attach before the load starts
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="",
                        help="record py-spy profiles of mailyard into PREFIX-send/smtp.txt")
    parser.add_argument("--queued", action="store_true",
                        help="send alone: deliver messages queued before it starts (its CPU "
                             "includes its start-up)")
    parser.add_argument("--local-concurrency", type=int, default=0,
                        help="mailyard's send.local_concurrency (default: the node's, 10; "
                             "Postfix's virtual agent may run 20 deliveries to one domain)")
    parser.add_argument("--only", choices=("mailyard", "postfix"), default="",
                        help="measure one server only (for profiling; no ratio)")
    args = parser.parse_args()
    try:
        run(args)
    finally:
        for base in _BASES:
            shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        sys.exit("e2e_bench: run as root (Postfix's master needs it)")
    for tool in (SMTP_SOURCE, POSTFIX_MASTER):
        if not Path(tool).exists():
            sys.exit(f"e2e_bench: {tool} is missing (apt-get install postfix)")
    if args.queued:
        for n in range(args.rounds):
            r = measure_queued(args)
            print(f"round {n + 1}: send alone: {args.messages} queued messages in the Maildir "
                  f"in {r.end_to_end_s:.2f} s ({args.messages / r.end_to_end_s:.0f} messages/s"
                  f"), CPU {1000 * r.cpu_s / args.messages:.2f} ms/message", flush=True)
        return
    kinds: list[type[Mailyard] | type[Postfix]] = [Mailyard, Postfix]
    if args.only:
        kinds = [Mailyard if args.only == "mailyard" else Postfix]
    results: dict[str, list[Round]] = {kind.name: [] for kind in kinds}
    for n in range(args.rounds):
        order = kinds if n % 2 == 0 else kinds[::-1]  # alternate
        for kind in order:
            r = measure(kind, args)
            results[kind.name].append(r)
            print(f"round {n + 1}: {kind.name}: accepted in {r.accepted_s:.2f} s, "
                  f"in the Maildir in {r.end_to_end_s:.2f} s "
                  f"({args.messages / r.end_to_end_s:.0f} messages/s), "
                  f"CPU {1000 * r.cpu_s / args.messages:.2f} ms/message"
                  + (f" (send {1000 * r.cpu_parts[0] / args.messages:.2f}, smtp "
                     f"{1000 * r.cpu_parts[1] / args.messages:.2f})"
                     if len(r.cpu_parts) == 2 else ""), flush=True)
    print()
    print(f"{args.messages} messages of {args.size} octets, {args.sessions} sessions, "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print()
    print("| server | SMTP in to Maildir, messages/s (median) | rounds | accepted, messages/s "
          "(median) | CPU ms/message (median) |")
    print("|---|---:|---|---:|---:|")
    medians: dict[str, tuple[float, float]] = {}
    for name, rounds in results.items():
        e2e = [args.messages / r.end_to_end_s for r in rounds]
        acc = [args.messages / r.accepted_s for r in rounds]
        cpu = [1000 * r.cpu_s / args.messages for r in rounds]
        medians[name] = (statistics.median(e2e), statistics.median(cpu))
        parts = ""
        if rounds and len(rounds[0].cpu_parts) == 2:  # mailyard: send and smtp apart
            send = statistics.median(1000 * r.cpu_parts[0] / args.messages for r in rounds)
            smtp = statistics.median(1000 * r.cpu_parts[1] / args.messages for r in rounds)
            parts = f" (send {send:.2f}, smtp {smtp:.2f})"
        print(f"| {name} | {statistics.median(e2e):.0f} | "
              f"{', '.join(f'{x:.0f}' for x in e2e)} | {statistics.median(acc):.0f} | "
              f"{statistics.median(cpu):.2f}{parts} |")
    if args.only:
        return
    ours, theirs = medians[Mailyard.name], medians[Postfix.name]
    print()
    print(f"mailyard / Postfix: throughput {ours[0] / theirs[0]:.2f}x, "
          f"CPU per message {ours[1] / theirs[1]:.2f}x")


if __name__ == "__main__":
    main()

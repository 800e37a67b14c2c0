"""The queue browser with a full queue: how long a page of the JSON API and `queue stats` take.

Not a test. Fills a fresh node home's queue with N messages (10,000 by default) through the
queue's own inject API (`Queue.open_message().commit()`, each message fsynced as for SMTP),
splits nine in ten of them into the remote queue as the send service does, gives a quarter
of those a deferred attempt record and holds one in twenty (as the mail owner when run as
root, as the services write the queue). Then it starts the panel with its root helper (as
a node does: the panel asks the helper, whose long-lived worker reads the queue as the mail
owner and keeps the listing's cache) and times, over HTTPS with a bearer token:

* `GET /api/v1/queue/browse` (the page's data: the first 50 messages with each recipient's
  state), with no filter and with a filter (a domain; a recipient state);
* `GET /api/v1/queue/stats` (the Quick Stats counts);

and the same calls in-process (queue.admin.page, queue.admin.stats), without HTTP. "Cold" is
the first call after the panel (or the process's cache) started; "warm" the median of the
next calls. Bounded: at most --repeat warm calls each and --budget seconds overall. Run:

    .venv/bin/python bench/queue_bench.py --messages 10000 --repeat 7
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import httpx  # noqa: E402

from mailyard.nodeinit import init_home  # noqa: E402
from mailyard.panel.tokens import create_token  # noqa: E402
from mailyard.queue import Envelope, Queue, admin, attempts, holds, listing, select  # noqa: E402
from mailyard.queue import state as qstate  # noqa: E402
from mailyard.services.helper import SOCKET_NAME  # noqa: E402
from mailyard.services.privileges import drop_privileges  # noqa: E402
from mailyard.store.db import dispose_all  # noqa: E402

DOMAINS = 50  # recipients spread over this many domains (d0.test … d49.test)
SPLIT_BATCH = 200


def fill(q: Queue, count: int) -> list[str]:
    ids = []
    for i in range(count):
        with q.open_message() as w:
            w.write(f"From: s{i % 97}@sender.test\nSubject: bench {i}\n\n{'x' * 2000}\n".encode())
            ids.append(w.commit(Envelope(sender=f"s{i % 97}@sender.test",
                                         recipients=[f"u{i}@d{i % DOMAINS}.test"],
                                         client_ip="192.0.2.1")))
    split = [qid for n, qid in enumerate(ids) if n % 10]
    for start in range(0, len(split), SPLIT_BATCH):
        batch = split[start:start + SPLIT_BATCH]
        qstate.split_todo(q, [(qid, qstate.read_todo(q, qid)) for qid in batch],
                          lambda _r: False)
    now = time.time()
    for n, qid in enumerate(split):
        if n % 4 == 0:
            env = Envelope.from_bytes(q.path("info", qid).read_bytes())
            attempts.write(q, qid, {env.recipients[0]: {
                "attempts": 2, "last_reply": "451 4.3.0 try later", "next_retry": now + 900}})
        if n % 20 == 0:
            holds.hold(q, qid, "bench")
    return ids


def timed(fn: Callable[[], object], repeat: int, deadline: float) -> tuple[float, float]:
    t = time.perf_counter()
    fn()
    cold = (time.perf_counter() - t) * 1000
    warm = []
    for _ in range(repeat):
        if time.monotonic() > deadline:
            break
        t = time.perf_counter()
        fn()
        warm.append((time.perf_counter() - t) * 1000)
    return cold, statistics.median(warm) if warm else float("nan")


def fill_as_mail_owner(q: Queue, count: int) -> None:
    """fill() in a child that has become the mail owner (run as root), so that the helper's
    worker can read what it wrote, as on a node."""
    if os.geteuid() != 0:
        fill(q, count)
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            drop_privileges()
            fill(q, count)
            code = 0
        finally:
            os._exit(code)
    if os.waitpid(pid, 0)[1] != 0:
        raise SystemExit("filling the queue as the mail owner failed")


def start_helper(home_root: Path, deadline: float) -> subprocess.Popen[bytes]:
    """The panel's root helper, as supervisord starts it; ready once its socket is."""
    log = open(home_root / "log" / "helper-bench.log", "wb")  # noqa: SIM115 (the child's)
    proc = subprocess.Popen([sys.executable, "-m", "mailyard.services.run", "helper", "--home",
                             str(home_root)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=dict(os.environ,
                                                             MAILYARD_HOME=str(home_root)))
    sock = home_root / "run" / SOCKET_NAME
    while not sock.is_socket():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the helper did not start")
        time.sleep(0.1)
    return proc


def start_panel(home_root: Path) -> subprocess.Popen[bytes]:
    log = open(home_root / "log" / "panel-bench.log", "wb")  # noqa: SIM115 (the child's)
    return subprocess.Popen([sys.executable, "-m", "mailyard.services.run", "panel", "--home",
                             str(home_root)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=dict(os.environ,
                                                             MAILYARD_HOME=str(home_root)))


def wait_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/signin", verify=False, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the panel did not start in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds, all in")
    parser.add_argument("--keep", type=Path, default=None,
                        help="fill (once) and keep the node home in this directory, for "
                             "another run; without it a temporary home is removed at the end")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    base = args.keep or Path(tempfile.mkdtemp(prefix="mailyard-queue-bench-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chmod(base, 0o711)  # the panel's user and the mail owner reach the home below
    proc = helper = None
    try:
        port_base = 20000 + (os.getpid() % 400) * 100
        filled = (base / "node" / "mailyard.toml").exists()
        home, _ = init_home(base / "node", "mx.bench.test", port_base=port_base)
        q = Queue(home.queue_dir)
        t = time.perf_counter()
        if not filled:
            fill_as_mail_owner(q, args.messages)
        print(f"{'filled' if not filled else 'reused'} a queue in {time.perf_counter() - t:.1f} s;"
              f" stats {admin.stats(home)}")
        rows: list[tuple[str, float, float]] = []
        deferred = select.make_filter(state="deferred")
        by_domain = select.make_filter(domain="d7.test")
        listing._CACHE.clear()  # cold: this process has not listed the queue yet
        rows.append(("in-process page, no filter", *timed(
            lambda: admin.page(home, select.Filter(), 0, 50), args.repeat, deadline)))
        rows.append(("in-process page, domain", *timed(
            lambda: admin.page(home, by_domain, 0, 50), args.repeat, deadline)))
        rows.append(("in-process page, state=deferred", *timed(
            lambda: admin.page(home, deferred, 0, 50), args.repeat, deadline)))
        rows.append(("in-process stats", *timed(lambda: admin.stats(home), args.repeat,
                                                deadline)))
        token = create_token(home, f"bench-{os.getpid()}")
        dispose_all()
        helper = start_helper(home.root, deadline)
        proc = start_panel(home.root)
        url = f"https://127.0.0.1:{home.port('panel')}"
        wait_ready(url, deadline)
        with httpx.Client(base_url=url, verify=False, timeout=120,
                          headers={"Authorization": f"Bearer {token}"}) as api:
            def get(path: str, **params: object) -> Callable[[], object]:
                def call() -> object:
                    answer = api.get(path, params=params)
                    answer.raise_for_status()
                    return answer.json()
                return call
            rows.append(("API browse, no filter", *timed(get("/api/v1/queue/browse"),
                                                         args.repeat, deadline)))
            rows.append(("API browse, domain", *timed(
                get("/api/v1/queue/browse", domain="d7.test"), args.repeat, deadline)))
            rows.append(("API browse, state=deferred", *timed(
                get("/api/v1/queue/browse", state="deferred"), args.repeat, deadline)))
            rows.append(("API stats", *timed(get("/api/v1/queue/stats"), args.repeat,
                                             deadline)))
        load = os.getloadavg()
        print(f"\n{admin.stats(home)['messages']} messages, load average {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f}, {os.cpu_count()} CPUs")
        print(f"{'what':<36}{'cold ms':>10}{'warm ms':>10}")
        for name, cold, warm in rows:
            print(f"{name:<36}{cold:>10.1f}{warm:>10.1f}")
    finally:
        for running in (proc, helper):
            if running is not None:
                os.killpg(running.pid, signal.SIGTERM)
                running.wait(30)
        dispose_all()
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

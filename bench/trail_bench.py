"""How long `mailyard trail` takes on a month of a node's logs, beside `grep -F` over the same
files (what an administrator does without it: find the lines, not yet the story).

Writes HOME/log/{smtp,send} for `--days` days of `--per-day` messages each (1-3 recipients,
70 % local; of the remote deliveries 90 % succeed at once, 7 % are deferred first, 3 % fail
and bounce), in multilog files rotated at 16 MB as LogDir does, with the node's own line
functions (smtp/loglines.py, delivery/sendlog.py). Then times, each `--repeat` times (best
kept): a rare address (3 messages), a busy address (1 % of the mail), a queue id, a
Message-ID, and the busy address with `--since` 1 day. Bounded: the defaults write about
one month at 4,000 messages a day (~230 MB); nothing runs unless asked.

    .venv/bin/python bench/trail_bench.py [--days 30] [--per-day 4000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailyard.delivery import sendlog as S
from mailyard.logs import MAX_FILE_BYTES, tai64n
from mailyard.smtp import loglines as L
from mailyard.smtp import replies
from mailyard.trail import query_of
from mailyard.trail_logs import trail

DAY = 86_400.0
MAX_DAYS, MAX_PER_DAY = 62, 50_000  # the bound: two months of a busy node


class Writer:
    """One multilog directory, rotated at LogDir's size."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True)
        self.path = path
        self.f = open(path / "current", "w")  # noqa: SIM115
        self.size = 0

    def line(self, t: float, text: str) -> None:
        data = f"{tai64n(t)} {text}\n"
        self.f.write(data)
        self.size += len(data)
        if self.size >= MAX_FILE_BYTES:
            self.f.close()
            os.rename(self.path / "current", self.path / f"{tai64n(t)}.s")
            self.f = open(self.path / "current", "w")  # noqa: SIM115
            self.size = 0

    def close(self) -> None:
        self.f.close()


def generate(logs: Path, days: int, per_day: int, rare: str, busy: str) -> tuple[int, str]:
    """The logs; returns a queue id and a Message-ID to look for (both in the middle)."""
    rng = random.Random(19)
    smtp, send = Writer(logs / "smtp"), Writer(logs / "send")
    start = time.time() - days * DAY
    step = DAY / per_day
    total = days * per_day
    rare_at = {total // 4, total // 2, 3 * total // 4}
    middle = total // 2 + 1
    delivery, qp = 0, 1000
    probe = (0, "")
    for i in range(total):
        t = start + i * step
        qid = 100_000 + rng.randrange(200_000)  # inode numbers, used again
        sender = busy if i % 100 == 0 else f"user{rng.randrange(5000)}@sender{rng.randrange(300)}.example"
        rcpts = [rare if i in rare_at else
                 (f"box{rng.randrange(2000)}@local.example" if rng.random() < 0.7
                  else f"r{rng.randrange(9000)}@far{rng.randrange(500)}.example")
                 for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        msgid = f"{i}.{rng.randrange(1 << 30)}@mua.example"
        if i == middle:
            probe = (qid, msgid)
        session = f"{1000 + i % 7}.{i}"
        smtp.line(t, L.session(L.connect(3, 20, "192.0.2.7", 40000 + i % 20000), session))
        if rng.random() < 0.2:
            smtp.line(t, L.session(L.reject("192.0.2.7", replies.NO_SUCH_USER,
                                            f"nobody{i}@local.example", sender), session))
        smtp.line(t, L.session(L.accepted(str(qid), 2000, sender, rcpts, "192.0.2.7", "ESMTPS",
                                          "", 0, 0, tls="TLSv1.3", helo="mua.example",
                                          msgid=msgid), session))
        smtp.line(t, L.session(L.end("192.0.2.7", 1, 0.04), session))
        qp += 1
        send.line(t, S.new_msg(str(qid)))
        send.line(t, S.info_msg(str(qid), 2000, sender, qp, 107))
        failed = False
        for r in rcpts:
            delivery += 1
            local = r.endswith("@local.example") or r == rare
            send.line(t + 0.1, S.starting_delivery(delivery, str(qid),
                                                   "local" if local else "remote", r))
            send.line(t + 0.1, S.status(1, 10, 0, 20))
            roll = rng.random()
            if local:
                send.line(t + 0.2, S.delivery_result(delivery, "success",
                                                     f"did 1+0+0\nmaildir INBOX {i}.M1P2Q3.mx"))
            elif roll < 0.9:
                send.line(t + 0.3, S.delivery_result(delivery, "success",
                                                     "192.0.2.50 accepted message.\n"
                                                     "Remote host said: 250 ok\n"))
            elif roll < 0.97:
                send.line(t + 0.3, S.delivery_result(delivery, "deferral",
                                                     "192.0.2.50 does not like recipient.\n"
                                                     "Remote host said: 451 try later\n"))
                delivery += 1
                send.line(t + 60, S.starting_delivery(delivery, str(qid), "remote", r))
                send.line(t + 61, S.delivery_result(delivery, "success",
                                                    "192.0.2.50 accepted message.\n"))
            else:
                failed = True
                send.line(t + 0.3, S.delivery_result(delivery, "failure",
                                                     "192.0.2.50 does not like recipient.\n"
                                                     "Remote host said: 550 no such user\n"))
        if failed:
            qp += 1
            send.line(t + 62, S.bounce_msg(str(qid), qp))
            bqid = 300_000 + rng.randrange(100_000)
            send.line(t + 62, S.new_msg(str(bqid)))
            send.line(t + 62, S.info_msg(str(bqid), 3000, "", qp, 107))
            delivery += 1
            send.line(t + 63, S.starting_delivery(delivery, str(bqid), "remote", sender))
            send.line(t + 63, S.delivery_result(delivery, "success", "192.0.2.9 accepted.\n"))
            send.line(t + 63, S.end_msg(str(bqid)))
        send.line(t + 62, S.end_msg(str(qid)))
    smtp.close()
    send.close()
    return probe


def best(repeat: int, fn) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    """The best wall and CPU seconds of `repeat` runs, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result


def grep(logs: Path, text: str) -> int:
    files = sorted(str(p) for d in ("smtp", "send") for p in (logs / d).iterdir())
    out = subprocess.run(["grep", "-F", "-c", "-i", text, *files], capture_output=True,
                         text=True, env=dict(os.environ, LC_ALL="C"))
    return sum(int(line.rsplit(":", 1)[1]) for line in out.stdout.split())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not (1 <= args.days <= MAX_DAYS and 1 <= args.per_day <= MAX_PER_DAY
            and 1 <= args.repeat <= 10):
        print(f"--days 1..{MAX_DAYS}, --per-day 1..{MAX_PER_DAY}, --repeat 1..10",
              file=sys.stderr)
        return 2
    rare, busy = "rare@local.example", "busy@sender.example"
    with tempfile.TemporaryDirectory(prefix="trail-bench-") as tmp:
        logs = Path(tmp) / "log"
        t0 = time.perf_counter()
        qid, msgid = generate(logs, args.days, args.per_day, rare, busy)
        size = sum(p.stat().st_size for d in ("smtp", "send") for p in (logs / d).iterdir())
        print(f"{args.days} days x {args.per_day} messages: {size / 1e6:.0f} MB of logs in "
              f"{len(list((logs / 'send').iterdir())) + len(list((logs / 'smtp').iterdir()))} "
              f"files, written in {time.perf_counter() - t0:.0f} s")
        print(f"{'query':<34} {'messages':>8} {'wall s':>7} {'cpu s':>7} {'grep -F s':>9}")
        day_ago = time.time() - DAY
        for label, q, since in (("rare address (3 messages)", rare, None),
                                ("busy address (1 % of mail)", busy, None),
                                (f"queue id {qid}", str(qid), None),
                                ("Message-ID", f"<{msgid}>", None),
                                ("busy address, --since 1 day", busy, day_ago)):
            wall, cpu, found = best(args.repeat, lambda q=q, s=since: trail(logs, query_of(q), s))
            gwall, _, _ = best(args.repeat, lambda q=q: grep(logs, q.strip("<>")))
            print(f"{label:<34} {len(found.messages):>8} {wall:>7.2f} {cpu:>7.2f} "  # type: ignore[attr-defined]
                  f"{gwall:>9.2f}")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

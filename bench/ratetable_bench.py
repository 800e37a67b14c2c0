"""The cost of the outbound rate counters on the submission path (docs/limits.md).

    python bench/ratetable_bench.py [--senders 1 100 1000] [--rounds 2000]

Counts `rounds` messages spread over N senders in a fresh node home's counter file and
prints the time per message counted (`charge`: the exclusive lock, two slots read and
written) and per early check (`buckets`: the shared lock, two slots read). Bounded: a few
thousand calls, a few seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from mailyard.nodeinit import init_home
from mailyard.smtp import ratelimit as RL
from mailyard.smtp.ratetable import RateTable


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--senders", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailyard-ratebench-"))
    try:
        home, _ = init_home(root / "node", "mx.example.test", port_base=20000)
        limits = RL.Limits(10**6, 10**7, 10**7)  # never reached: every message is counted
        with RateTable(home) as table:
            for count in args.senders:
                senders = [RL.mailbox_sender(f"user{i}@d{i % 50}.test") for i in range(count)]
                for sender in senders:
                    table.charge(limits, sender, 1)
                t0 = time.perf_counter()
                for i in range(args.rounds):
                    table.charge(limits, senders[i % count], 2)
                t1 = time.perf_counter()
                for i in range(args.rounds):
                    table.buckets(senders[i % count])
                t2 = time.perf_counter()
                print(f"senders={count:5d} charge={1e6 * (t1 - t0) / args.rounds:6.1f} us "
                      f"early={1e6 * (t2 - t1) / args.rounds:6.1f} us")
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

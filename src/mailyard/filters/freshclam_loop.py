"""The freshclam service's process: run freshclam once per interval, record, sleep.

`python -m mailyard.filters.freshclam_loop HOME` is what the supervisor runs. A failure is
recorded in HOME/run/freshclam.status and waited out like a success: the loop never retries
in a tight circle, and SIGTERM ends it at once, also while freshclam runs.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from ..home import Home
from .freshclam import UPDATE_INTERVAL_SECONDS, run_once, write_status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mailyard.filters.freshclam_loop HOME", file=sys.stderr)
        return 2
    home = Home.find(args[0])
    stop = threading.Event()

    def _terminate(signum, frame):  # type: ignore[no-untyped-def]
        stop.set()
        raise SystemExit(0)  # interrupts a running freshclam: subprocess.run kills it

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    while not stop.is_set():
        status = run_once(home)
        status["next_run"] = time.time() + UPDATE_INTERVAL_SECONDS
        write_status(home, status)
        print(f"freshclam: {'ok' if status['ok'] else 'failed'}: {status['message']}"
              f" ({status['detail']})", flush=True)
        stop.wait(UPDATE_INTERVAL_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())

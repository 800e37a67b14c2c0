"""The `send` service: runs the delivery scheduler until SIGTERM (qmail-send's job).

Signals: SIGTERM/SIGINT stop (deliveries in flight may finish), SIGHUP reloads the settings,
SIGUSR1 or SIGALRM makes every waiting message due now ("Process Mail Queue"). Writing to the
queue's trigger FIFO (every inject does) makes it look for new messages.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from .. import __version__
from ..filters.training import train_if_due_async
from ..home import Home
from ..queue import Queue
from ..queue.control import QueueLock
from ..queue.layout import TRIGGER
from ..services.privileges import drop_privileges
from .scheduler import Scheduler
from .sendlog import SendLog

# Threads for blocking work (fsync, the store, reading messages): local deliveries use one
# each while they write, the rest is short. Above the default local concurrency of 10.
MIN_WORKER_THREADS = 16
MAX_WORKER_THREADS = 128


def version() -> str:
    return f"mailyard send {__version__}"


class _Trigger:
    """The read end of lock/trigger; keeps a write end open so it never reads end-of-file."""

    def __init__(self, queue: Queue) -> None:
        path = queue.root / TRIGGER
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(path, os.O_WRONLY | os.O_NONBLOCK)

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except OSError as err:
            if err.errno != errno.EAGAIN:
                raise

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._keep)


# How often the send service asks whether the daily Bayes IMAP training is due (guide 6.1.3:
# "once daily"); the check itself is a file read.
TRAINING_CHECK_SECONDS = 60


async def _daily_training(home: Home) -> None:
    """Learn the "Learn Spam"/"Learn Ham" folders once a day, alongside deliveries."""
    while True:
        try:
            await train_if_due_async(home)
        except Exception as exc:  # training must never stop deliveries; try again later
            print(f"send: bayes training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        await asyncio.sleep(TRAINING_CHECK_SECONDS)


async def _main(home: Home) -> int:
    queue = Queue(home.queue_dir)
    lock = QueueLock(queue)
    if not lock.try_acquire():
        print(f"send: another send service is using {queue.root}; exiting", file=sys.stderr)
        return 1
    log = SendLog(home.service_log_dir("send"))
    scheduler = Scheduler(home, log)
    loop = asyncio.get_running_loop()
    workers = min(max(MIN_WORKER_THREADS, 2 * scheduler.limits["local"] + 4), MAX_WORKER_THREADS)
    loop.set_default_executor(ThreadPoolExecutor(max_workers=workers,
                                                 thread_name_prefix="send-io"))
    trigger = _Trigger(queue)

    def on_trigger() -> None:
        trigger.drain()
        scheduler.notify()

    loop.add_reader(trigger.fd, on_trigger)
    loop.add_signal_handler(signal.SIGTERM, scheduler.request_stop)
    loop.add_signal_handler(signal.SIGINT, scheduler.request_stop)
    loop.add_signal_handler(signal.SIGHUP, scheduler.request_reload)
    loop.add_signal_handler(signal.SIGUSR1, scheduler.request_flush)
    loop.add_signal_handler(signal.SIGALRM, scheduler.request_flush)
    training = asyncio.ensure_future(_daily_training(home))
    try:
        await scheduler.run()
    finally:
        training.cancel()
        loop.remove_reader(trigger.fd)
        trigger.close()
        log.close()
        lock.release()
    return 0


def run(home: Home) -> None:
    """Entry point of the supervised `send` program."""
    drop_privileges()  # loads what a dropped process imports lazily first
    code = asyncio.run(_main(home))
    if code:
        raise SystemExit(code)

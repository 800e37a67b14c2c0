"""The delivery side of the durability contract, read from the system calls of `send`:

- a Maildir file's data is made durable (fsync of the file, or a syncfs) before it is renamed
  into new/;
- a recipient's done mark (the `D` written over its `T` in local/N) is written only after a
  sync that began after that rename returned (fsync of new/, or a syncfs), so a crash can
  never leave a recipient marked done whose message is not in its mailbox;
- the done mark is made durable before the delivery counts as recorded.

The send service runs under `strace -f` while several messages are delivered at once; the
checker is also run on hand-written traces that break the contract, so it can be seen to fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from send_harness import inject, queue_empty, wait_until

from mailyard.home import Home

MESSAGES = 8
TRACED = "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,write,pwrite64"
SYNCS = ("fsync", "fdatasync", "syncfs")

_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?)[^<]*(?:<(\d+\.\d+)>)?\s*$")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")
_STRINGS = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass
class Call:
    name: str
    args: str
    result: str
    start: float
    end: float

    @property
    def fd_path(self) -> str:
        m = _FD_PATH.match(self.args)
        return m.group(1) if m else ""

    @property
    def strings(self) -> list[str]:
        return _STRINGS.findall(self.args)


def parse(lines: Iterable[str]) -> list[Call]:
    """`strace -f -ttt -T -yy` lines as calls with their start and end (threads included;
    a call split by another thread's line is joined again)."""
    calls: list[Call] = []
    open_calls: dict[str, tuple[str, str, float]] = {}
    for raw in lines:
        m = _LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        tid, stamp, rest = m.group(1), float(m.group(2)), m.group(3)
        if rest.endswith("<unfinished ...>"):
            c = _CALL.match(rest)
            if c:
                open_calls[tid] = (c.group(1), c.group(2).removesuffix("<unfinished ...>"),
                                   stamp)
            continue
        r = _RESUMED.match(rest)
        if r:
            if tid in open_calls:
                name, args, start = open_calls.pop(tid)
                res = _RESULT.search(r.group(2))
                if res:
                    calls.append(Call(name, args + r.group(2), res.group(1), start, stamp))
            continue
        c = _CALL.match(rest)
        res = _RESULT.search(rest)
        if c and res:
            calls.append(Call(c.group(1), c.group(2), res.group(1), stamp,
                              stamp + float(res.group(2) or 0)))
    return calls


def delivery_breaches(calls: list[Call], deliveries: dict[str, str], new_dir: str,
                      queue: str) -> list[str]:
    """What breaks the contract for each delivery (Maildir file name in new/ -> queue id)."""
    out: list[str] = []
    syncs = [c for c in calls if c.name in SYNCS and c.result == "0"]

    def synced(path: str, after: float, before: float) -> bool:
        return any(c.start >= after and c.end <= before
                   and (c.fd_path == path or c.name == "syncfs") for c in syncs)

    for name, qid in deliveries.items():
        final = f"{new_dir}/{name}"
        renames = [c for c in calls if c.name.startswith("rename") and c.result == "0"
                   and len(c.strings) >= 2 and c.strings[-1] == final]
        if not renames:
            out.append(f"{qid}: no rename into {final}")
            continue
        rename = renames[-1]
        tmp = rename.strings[0]
        writes = [c for c in calls if c.name in ("write", "pwrite64") and c.fd_path == tmp]
        if not writes:
            out.append(f"{qid}: no write of {tmp}")
            continue
        if not synced(tmp, max(c.end for c in writes), rename.start):
            out.append(f"{qid}: {tmp} not made durable between its writes and its rename")
        marks = [c for c in calls if c.name == "pwrite64" and c.strings[:1] == ["D"]
                 and c.fd_path == f"{queue}/local/{qid}" and c.result == "1"]
        if not marks:
            out.append(f"{qid}: no done mark written")
            continue
        mark = marks[0]
        if not synced(new_dir, rename.end, mark.start):
            out.append(f"{qid}: done mark written before a sync of new/ after its rename")
        if not synced(f"{queue}/local/{qid}", mark.end, float("inf")):
            out.append(f"{qid}: done mark never made durable")
    return out


def test_maildir_deliveries_and_done_marks_follow_their_syncs(mail_home: Home) -> None:
    if shutil.which("strace") is None:  # a missing tool is a failure, not a skip
        pytest.fail("strace is missing: `make test` installs it (scripts/setup.sh)")
    tokens = {}
    for k in range(MESSAGES):  # all waiting at start: split in one batch, delivered at once
        token = f"contract-token-{k}"
        body = (f"From: alice@remote.test\r\nTo: joe@example.test\r\nSubject: {token}\r\n"
                f"\r\n{token}\r\n").encode()
        tokens[token] = inject(mail_home, ["joe@example.test"], body=body)
    trace = mail_home.root / "send.strace"
    code = ("from mailyard.home import Home; from mailyard.delivery.service import run; "
            f"run(Home.find({str(mail_home.root)!r}))")
    proc = subprocess.Popen(["strace", "-f", "-ttt", "-T", "-yy", "-s", "300", "-e", TRACED,
                             "-o", str(trace), sys.executable, "-c", code],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    new_dir = mail_home.maildir("joe@example.test") / "new"
    try:
        wait_until(lambda: new_dir.is_dir() and len(os.listdir(new_dir)) == MESSAGES,
                   what="every message in the Maildir")
        wait_until(lambda: queue_empty(mail_home), what="the queue to empty")
    finally:
        _stop_group(proc)
    deliveries: dict[str, str] = {}
    for path in new_dir.iterdir():
        text = path.read_text()
        deliveries[path.name] = next(q for t, q in tokens.items() if t in text)
    assert sorted(deliveries.values()) == sorted(tokens.values())
    calls = parse(trace.read_text().splitlines())
    breaches = delivery_breaches(calls, deliveries, os.path.realpath(new_dir),
                                 os.path.realpath(mail_home.queue_dir))
    assert breaches == []


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the service stops, and strace ends with it
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# ---- the checker itself fails on a trace that breaks the contract ----------------------------

Q = "/h/queue"
NEW = "/h/mail/joe/Maildir/new"
TMP = "/h/mail/joe/Maildir/tmp/m1"
GOOD = [
    f'10 1.000 write(7<{TMP}>, "Return-Path: <a@b.test>\\n", 24) = 24 <0.000>',
    '11 1.001 syncfs(9</h/mail> <unfinished ...>',
    '11 1.004 <... syncfs resumed>) = 0 <0.003>',
    f'10 1.005 rename("{TMP}", "{NEW}/m1") = 0 <0.000>',
    f'12 1.006 fsync(8<{NEW}>) = 0 <0.001>',
    f'12 1.008 pwrite64(6<{Q}/local/5>, "D", 1, 0) = 1 <0.000>',
    f'12 1.009 fsync(6<{Q}/local/5>) = 0 <0.001>',
]


def test_the_checker_accepts_a_trace_that_keeps_the_contract() -> None:
    assert delivery_breaches(parse(GOOD), {"m1": "5"}, NEW, Q) == []


@pytest.mark.parametrize("broken", [
    [line for line in GOOD if "syncfs" not in line],  # the data never made durable
    [line for line in GOOD if f"fsync(8<{NEW}>)" not in line],  # new/ never synced
    GOOD[:4] + [GOOD[5].replace("1.008", "1.0055"), GOOD[4], GOOD[6]],  # D before new/ sync
    GOOD[:6],  # the done mark never synced
    [line.replace("= 0 <0.003>", "= -1 EIO (Input/output error) <0.003>")
     for line in GOOD],  # the data's sync failed
])
def test_the_checker_finds_a_broken_contract(broken: list[str]) -> None:
    assert delivery_breaches(parse(broken), {"m1": "5"}, NEW, Q)

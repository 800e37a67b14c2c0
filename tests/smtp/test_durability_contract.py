"""The durability contract, read from the system calls: a `250 … queued as N` reaches the
client's socket only after that message's data, envelope and directory entries are on disk:
after its last write to each file and after its renames, a sync covering them started, and
returned, before the reply. (With syncfs that is one round after the renames; with fsync the
files are synced before they are renamed, then the directories.)

The smtp service runs under `strace -f` while several clear-text clients send at once (so
group commit batches them); the trace is then checked message by message. The checker is
also run on hand-written traces that break the contract, so it can be seen to fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
from smtp_helpers import JOE, PYTHON, REPO, START_TIMEOUT, Service

from mailyard.home import Home

CLIENTS = 4
MESSAGES_PER_CLIENT = 5
TRACED = "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,sendto,write,writev,sendmsg"
SYNCS = ("fsync", "fdatasync", "syncfs")

_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?)[^<]*(?:<(\d+\.\d+)>)?\s*$")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")
_STRINGS = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUEUED = re.compile(r"queued as (\d+)")


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
    """strace -f -ttt -T -yy output as calls with start and end times (threads included)."""
    calls: list[Call] = []
    pending: dict[str, tuple[str, str, float]] = {}
    for raw in lines:
        m = _LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        tid, stamp, rest = m.group(1), float(m.group(2)), m.group(3)
        if rest.endswith("<unfinished ...>"):
            c = _CALL.match(rest)
            if c:
                pending[tid] = (c.group(1), c.group(2).removesuffix("<unfinished ...>"), stamp)
            continue
        r = _RESUMED.match(rest)
        if r:
            if tid not in pending:
                continue
            name, args, start = pending.pop(tid)
            res = _RESULT.search(r.group(2))
            if res:
                calls.append(Call(name, args + r.group(2), res.group(1), start, stamp))
            continue
        c = _CALL.match(rest)
        res = _RESULT.search(rest)
        if c and res:
            duration = float(res.group(2) or 0)
            calls.append(Call(c.group(1), c.group(2), res.group(1), stamp, stamp + duration))
    return calls


def contract_breaches(calls: list[Call], queue: str) -> tuple[list[str], int]:
    """What in the trace breaks the contract, and how many queued replies were checked."""
    breaches: list[str] = []
    renames = [c for c in calls if c.name.startswith("rename") and c.result == "0"]
    syncs = [c for c in calls if c.name in SYNCS]
    writes = [c for c in calls if c.name in ("write", "pwrite64", "writev") and c.result != "-1"]
    replies = [(c, q) for c in calls if c.name in ("sendto", "write", "writev", "sendmsg")
               and "TCP:" in c.args for s in c.strings for q in _QUEUED.findall(s)]

    def synced(path: str, after: float, before: float) -> bool:
        """A successful sync of `path` that started after `after` and returned before `before`
        (syncfs covers every file of the filesystem)."""
        return any(c.result == "0" and c.start >= after and c.end <= before
                   and (c.fd_path == path or c.name == "syncfs") for c in syncs)

    for reply, qid in replies:
        sent = reply.start
        mess, todo = f"{queue}/mess/{qid}", f"{queue}/todo/{qid}"
        to_mess = [c for c in renames if len(c.strings) >= 2 and c.strings[-1] == mess]
        to_todo = [c for c in renames if len(c.strings) >= 2 and c.strings[-1] == todo]
        if not to_mess or not to_todo:
            breaches.append(f"{qid}: no rename into mess/ and todo/ in the trace")
            continue
        data_rename, env_rename = to_mess[-1], to_todo[-1]
        data_tmp, env_tmp = data_rename.strings[0], env_rename.strings[0]
        if not (data_rename.end <= sent and env_rename.end <= sent):
            breaches.append(f"{qid}: 250 sent before its renames returned")
        for what, path, rename in (("data", data_tmp, data_rename),
                                   ("envelope", env_tmp, env_rename)):
            last = max((c.end for c in writes if c.fd_path == path and c.end <= rename.start),
                       default=None)
            if last is None:
                breaches.append(f"{qid}: no write of its {what} {path} in the trace")
            elif not synced(path, last, sent):
                breaches.append(f"{qid}: its {what} {path} was not synced between its last "
                                "write and the 250")
        if not synced(f"{queue}/mess", data_rename.end, sent):
            breaches.append(f"{qid}: mess/ not synced between the rename and the 250")
        if not synced(f"{queue}/todo", env_rename.end, sent):
            breaches.append(f"{qid}: todo/ not synced between the rename and the 250")
    return breaches, len(replies)


def _message(n: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ann@remote.test", JOE, f"contract {n}"
    msg.set_content(f"message {n}\n" * 20)
    return msg


def test_every_queued_reply_follows_the_fsyncs_of_its_message(node: Home) -> None:
    if shutil.which("strace") is None:  # a missing tool is a failure, not a skip
        pytest.fail("strace is missing: `make test` installs it (scripts/setup.sh)")
    trace = node.root / "smtp.strace"
    code = ("from mailyard.home import Home; from mailyard.smtp.service import run_smtp; "
            f"run_smtp(Home.find({str(node.root)!r}))")
    proc = subprocess.Popen(["strace", "-f", "-ttt", "-T", "-yy", "-s", "300", "-e", TRACED,
                             "-o", str(trace), PYTHON, "-c", code], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    service = Service("smtp", node, proc)
    try:
        service.wait_log("service=smtp pid=", timeout=START_TIMEOUT)
        errors: list[BaseException] = []

        def client(k: int) -> None:
            try:
                with smtplib.SMTP("127.0.0.1", node.port("smtp"), timeout=60) as s:
                    for i in range(MESSAGES_PER_CLIENT):
                        s.send_message(_message(k * 100 + i))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
    finally:
        # strace and the service share a process group: the service stops on its SIGTERM and
        # strace ends with it (strace alone would only detach and leave the service running)
        _stop_group(proc)
    calls = parse(trace.read_text().splitlines())
    breaches, checked = contract_breaches(calls, str(node.queue_dir))
    assert checked == CLIENTS * MESSAGES_PER_CLIENT, f"{checked} queued replies in the trace"
    assert breaches == []


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


# ---- the checker itself fails on a trace that breaks the contract ----------------------------

Q = "/h/queue"
GOOD = [
    '10 0.900 write(7</h/queue/tmp/m1>, "From: a", 7) = 7 <0.000>',
    '10 0.901 write(8</h/queue/tmp/5.envelope>, "{}", 2) = 2 <0.000>',
    '10 1.000 fsync(7</h/queue/tmp/m1>) = 0 <0.001>',
    '11 1.000 fsync(8</h/queue/tmp/5.envelope> <unfinished ...>',
    '11 1.003 <... fsync resumed>) = 0 <0.003>',
    '10 1.004 rename("/h/queue/tmp/m1", "/h/queue/mess/5") = 0 <0.000>',
    '10 1.005 rename("/h/queue/tmp/5.envelope", "/h/queue/todo/5") = 0 <0.000>',
    '12 1.006 fsync(9</h/queue/mess>) = 0 <0.001>',
    '12 1.008 fsync(9</h/queue/todo>) = 0 <0.001>',
    '1 1.010 sendto(5<TCP:[127.0.0.1:25->127.0.0.1:4000]>, "250 2.0.0 Ok: queued as 5\\r\\n",'
    ' 28, 0, NULL, 0) = 28 <0.000>',
]


# The same with syncfs (the committer's default on Linux 5.8 and later): one call, begun
# after the writes and the renames, covers them all before the reply.
GOOD_SYNCFS = [
    '10 0.900 write(7</h/queue/tmp/m1>, "From: a", 7) = 7 <0.000>',
    '10 0.901 write(8</h/queue/tmp/5.envelope>, "{}", 2) = 2 <0.000>',
    '10 1.004 rename("/h/queue/tmp/m1", "/h/queue/mess/5") = 0 <0.000>',
    '10 1.005 rename("/h/queue/tmp/5.envelope", "/h/queue/todo/5") = 0 <0.000>',
    '13 1.006 syncfs(11</h/queue/tmp>) = 0 <0.002>',
    '1 1.010 sendto(5<TCP:[127.0.0.1:25->127.0.0.1:4000]>, "250 2.0.0 Ok: queued as 5\\r\\n",'
    ' 28, 0, NULL, 0) = 28 <0.000>',
]


def test_the_checker_accepts_a_trace_that_keeps_the_contract() -> None:
    assert contract_breaches(parse(GOOD), Q) == ([], 1)
    assert contract_breaches(parse(GOOD_SYNCFS), Q) == ([], 1)


@pytest.mark.parametrize("broken", [
    [line for line in GOOD if "/h/queue/todo>" not in line],  # todo/ never fsynced
    [line for line in GOOD if "fsync(7</h/queue/tmp/m1>" not in line],  # data never fsynced
    GOOD[:7] + [GOOD[9].replace("1.010", "1.0055")] + GOOD[7:9],  # 250 before the dir fsyncs
    [line.replace(") = 0 <0.003>", ") = -1 EIO (Input/output error) <0.003>")
     for line in GOOD],  # the envelope's fsync failed
    [line for line in GOOD_SYNCFS if "syncfs" not in line],  # no sync at all
    [line.replace("1.006 syncfs", "1.0045 syncfs") for line in GOOD_SYNCFS],  # sync before
    # the envelope's rename had returned
    [line.replace("1.006 syncfs(11</h/queue/tmp>) = 0", "1.006 syncfs(11</h/queue/tmp>) = -1 "
                  "EIO (Input/output error)") for line in GOOD_SYNCFS],  # the sync failed
    GOOD_SYNCFS[:2] + ['10 1.003 syncfs(11</h/queue/tmp>) = 0 <0.000>'] + GOOD_SYNCFS[2:4]
    + [GOOD_SYNCFS[-1]],  # the only sync was before the renames
    [line.replace("10 1.000 fsync(7", "10 0.850 fsync(7") for line in GOOD],  # the data's
    # fsync came before its last write
])
def test_the_checker_finds_a_broken_contract(broken: list[str]) -> None:
    breaches, checked = contract_breaches(parse(broken), Q)
    assert checked == 1 and breaches

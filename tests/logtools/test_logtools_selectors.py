"""Selectors: the lines of a period from every file of a multilog directory, in time order."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailyard.logtools.tai64n import split_stamp, unix_to_tai64n

HOUR = 3600
DAY = 86400


def message(n: int, sender: str, recipient: str) -> list[str]:
    """The qmail-send lines of one message delivered remotely with success."""
    return [f"new msg {n}",
            f"info msg {n}: bytes {100 + n} from <{sender}> qp {n} uid 1001",
            f"starting delivery {n}: msg {n} to remote {recipient}",
            f"delivery {n}: success: 192.0.2.1_accepted_message./Remote_host_said:_250_ok/",
            f"end msg {n}"]


def write_log(path: Path, entries: list[tuple[float, str]]) -> None:
    path.write_text("".join(f"@{unix_to_tai64n(t)} {text}\n" for t, text in entries))


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A node home whose send log has messages 3 days, 5 hours, 2 hours and 10 minutes old,
    in two rotated files and `current` (times are far from any boundary the tests use)."""
    home = tmp_path / "home"
    logdir = home / "log" / "send"
    logdir.mkdir(parents=True)
    now = time.time()
    ages = {1: 3 * DAY, 2: 5 * HOUR, 3: 2 * HOUR, 4: 600}
    lines = {n: [(now - age + i, text) for i, text in
                 enumerate(message(n, f"s{n}@example.com", f"r{n}@example.net"))]
             for n, age in ages.items()}
    # Files created newest first, so directory order is not time order.
    write_log(logdir / "current", lines[4])
    second_close = now - 2 * HOUR + 100
    write_log(logdir / f"@{unix_to_tai64n(second_close)}.s", lines[2] + lines[3])
    first_close = now - 5 * HOUR - 100
    write_log(logdir / f"@{unix_to_tai64n(first_close)}.s", lines[1])
    (logdir / "lock").write_text("")
    (logdir / "state").write_text("")
    return home


def recipients(out: str) -> list[str]:
    return [line.split()[-1] for line in out.splitlines() if " to remote " in line]


def test_last_x_selects_the_period_up_to_now(sh, node: Path) -> None:
    assert recipients(sh(f"qmail-last-x '1 hour' --home {node}").out) == ["r4@example.net"]
    assert recipients(sh(f"qmail-last-x '3 hours' --home {node}").out) == [
        "r3@example.net", "r4@example.net"]
    assert recipients(sh(f"qmail-last-x 6 hours ago --home {node}").out) == [
        "r2@example.net", "r3@example.net", "r4@example.net"]


def test_selectors_read_rotated_files_and_current_in_time_order(sh, node: Path) -> None:
    r = sh(f"qmail-last-x '1 week' --logdir {node}/log/send")
    assert recipients(r.out) == [f"r{n}@example.net" for n in (1, 2, 3, 4)]
    stamps = [line[:26] for line in r.out.splitlines()]
    assert stamps == sorted(stamps)
    assert len(stamps) == 20


def test_the_node_home_comes_from_mailyard_home(sh, node: Path) -> None:
    r = sh("qmail-last-x '1 hour'", MAILYARD_HOME=str(node))
    assert recipients(r.out) == ["r4@example.net"]


def test_selected_lines_are_passed_on_byte_for_byte(sh, node: Path) -> None:
    # the operators, not the selector, turn stamps into readable times
    r = sh(f"qmail-last-x '1 hour' --home {node}")
    assert r.out == (node / "log" / "send" / "current").read_text()
    shown = sh(f"qmail-last-x '1 hour' --home {node} | show-all").out
    expected = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 600))[:13]
    assert shown.startswith(expected)  # same hour, UTC (TZ=UTC in the tests)


def test_reaching_back_before_the_oldest_log_warns_and_goes_on(sh, node: Path) -> None:
    r = sh(f"qmail-last-x '2 weeks' --home {node}")
    assert r.status == 0
    assert len(recipients(r.out)) == 4
    assert r.err.startswith("Warning: We only have logs dating back to ")
    assert r.err.endswith(".\n") and len(r.err.splitlines()) == 1
    assert sh(f"qmail-last-x '4 days' --home {node}").err == "Warning: We only have logs " \
        "dating back to " + r.err.split("back to ")[1]
    assert sh(f"qmail-last-x '2 days' --home {node}").err == ""


def test_start_end_with_hstamp_and_date(sh, node: Path) -> None:
    r = sh(f"qmail-start-end $(hstamp '6 hours ago') $(hstamp '1 hour ago') --home {node}")
    assert recipients(r.out) == ["r2@example.net", "r3@example.net"]
    r = sh(f"qmail-start-end $(date +%s -d '3 hours ago') $(date +%s) --home {node}")
    assert recipients(r.out) == ["r3@example.net", "r4@example.net"]
    r = sh(f"qmail-start-end '4 days ago' '1 day ago' --home {node}")
    assert recipients(r.out) == ["r1@example.net"]


def test_start_end_is_inclusive_to_the_second_on_a_real_log_file(sh) -> None:
    # 02:13:56 is the Yahoo deferral; 02:14:06 the Gmail failure (UTC)
    r = sh("qmail-start-end $(date +%s -d '2011-11-08 02:13:56') "
           "$(date +%s -d '2011-11-08 02:14:06') -f $FIX/qmail-send.tai64n.log")
    lines = r.out.splitlines()
    assert lines[0] == (f"@{unix_to_tai64n(1320718436)} delivery 4: deferral: Connected_to_"
                        "98.136.1.2_but_greeting_failed./Remote_host_said:_421_4.7.0_[TSS04]_"
                        "Messages_from_192.0.2.10_temporarily_deferred/")
    assert lines[-1] == f"@{unix_to_tai64n(1320718446)} status: local 0/10 remote 0/20"
    assert "Warning" not in r.err


@pytest.mark.parametrize("form", ["qmail-send.tai64nlocal-utc.log", "qmail-send.unixtime.log"])
def test_every_stamp_form_selects_and_prints_the_same(sh, form: str) -> None:
    ref = sh("qmail-start-end 1320718430 1320722000 -f $FIX/qmail-send.tai64n.log")
    other = sh(f"qmail-start-end 1320718430 1320722000 -f $FIX/{form}")
    assert [split_stamp(line).text for line in other.out.splitlines()] == \
        [split_stamp(line).text for line in ref.out.splitlines()]
    assert sh(f"qmail-start-end 1320718430 1320722000 -f $FIX/{form} | show-all").out == \
        sh("qmail-start-end 1320718430 1320722000 -f $FIX/qmail-send.tai64n.log | show-all").out
    assert len(ref.out.splitlines()) == 36  # offsets 10 s to 44 s (awk agrees)


def test_standard_input_with_dash_f(sh) -> None:
    r = sh("cat $FIX/qmail-send.unixtime.log | qmail-start-end 0 1330000000 -f - | wc -l")
    assert r.out.strip() == "77"  # every line of the file


def test_a_mixed_period_is_refused_with_the_reason_and_status_2(sh, node: Path) -> None:
    r = sh(f"qmail-last-x '3 days 12 hours 4 minutes' --home {node}")
    assert r.status == 2
    assert "'5044 minutes'" in r.err
    assert "usage:" in r.err
    assert r.out == ""


@pytest.mark.parametrize("args", ["'1 hour' --frobnicate", "", "1 2 3"])
def test_bad_selector_usage_exits_2_with_usage(sh, node: Path, args: str) -> None:
    tool = "qmail-start-end" if args == "1 2 3" else "qmail-last-x"
    r = sh(f"{tool} {args} --home {node} > out.txt; echo $? >&2")
    assert r.err.splitlines()[-1] == "2"
    assert "usage:" in r.err


def test_end_before_start_is_refused(sh, node: Path) -> None:
    r = sh(f"qmail-start-end 2000 1000 --home {node} > /dev/null")
    assert r.status == 2
    assert "END (1000) is before START (2000)" in r.err


def test_without_a_home_the_selector_says_how_to_give_one(sh) -> None:
    r = sh("qmail-last-x '1 hour' > /dev/null")
    assert r.status == 1
    assert "use --home DIR, set MAILYARD_HOME, or give --logdir DIR or -f FILE" in r.err
    r = sh("qmail-last-x '1 hour' --logdir /nonexistent > /dev/null")
    assert r.status == 1 and "no log directory at /nonexistent" in r.err


def test_hstamp_prints_epoch_seconds(sh) -> None:
    before = int(time.time())
    r = sh("hstamp '5 hours ago'")
    after = int(time.time())
    assert before - 5 * HOUR <= int(r.out) <= after - 5 * HOUR
    assert sh("hstamp 3 days 12 hours").status == 2


def _run_with_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run a tool with a pseudo-terminal as stdout; what it printed there."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mailyard.logtools", *args],
                            stdout=terminal, stderr=subprocess.PIPE, env=env)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(controller)
    return b"".join(chunks).decode()


def test_a_selector_alone_on_a_terminal_prints_its_help(node: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    shown = _run_with_terminal(["qmail-last-x", "1 hour", "--home", str(node)], env)
    assert "usage: qmail-last-x" in shown
    assert "pipe this into an operator" in shown
    assert "new msg" not in shown
    shown = _run_with_terminal(["qmail-start-end"], env)
    assert "usage: qmail-start-end" in shown

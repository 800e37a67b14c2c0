"""Bad input is counted and skipped with one warning line; never a traceback."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from mailyard.logtools.operators import attempts
from mailyard.logtools.sources import stamped_lines
from mailyard.logtools.tai64n import unix_to_tai64n
from mailyard.logtools.tracking import Diagnostics, Tracker

GOOD = Path(__file__).parent / "fixtures" / "qmail-send.tai64n.log"


def test_garbage_unstamped_and_malformed_lines_are_counted_in_one_warning(sh, tmp_path) -> None:
    lines = GOOD.read_text().splitlines()
    lines.insert(5, "this is not a log line")
    lines.insert(9, "new msg 655364")  # no stamp
    lines.insert(12, "@400000004eb8906205f5e100 starting delivery x: msg y to remote z")
    lines.insert(20, "")
    (tmp_path / "bad.log").write_text("\n".join(lines) + "\n")
    r = sh("show-all-detail -f bad.log")
    assert r.status == 0
    assert len(r.out.splitlines()) == 12
    assert r.err.splitlines() == [
        "show-all-detail: warning: skipped 4 bad lines (3 without a readable stamp, "
        "1 malformed, first at bad.log line 6); skipped 1 delivery result whose start is not "
        "in the input; 1 message started before the input (sender unknown, shown as ?)"]


def test_a_truncated_last_line_is_skipped(sh, tmp_path) -> None:
    data = GOOD.read_text()
    cut = data.index("delivery 12: report mangled") + 10
    (tmp_path / "cut.log").write_text(data[:cut])
    r = sh("show-all -f cut.log")
    assert r.status == 0
    assert "mangled" not in r.out
    assert "1 truncated" in r.err
    r = sh("qmail-start-end 0 2000000000 -f cut.log | wc -l")
    assert r.out.strip() == "75"  # the 75 whole lines before the cut


def test_binary_garbage_gives_no_traceback_anywhere_in_the_pipeline(sh, tmp_path) -> None:
    (tmp_path / "noise.log").write_bytes(os.urandom(20000) + b"\n\xff\xfe@4000\x00\n"
                                         + GOOD.read_bytes()[:500])
    r = sh("qmail-start-end 0 2000000000 -f noise.log | xsend a@b | show-all; "
           "cat noise.log | top-senders; cat noise.log | xrcpt a@b; echo done")
    assert "Traceback" not in r.err
    assert r.out.endswith("done\n")


def test_8bit_addresses_pass_through_a_pipeline_unchanged(sh, tmp_path) -> None:
    stamp = unix_to_tai64n(1320718424)
    raw = (f"@{stamp} new msg 1\n@{stamp} info msg 1: bytes 9 from <j\u00f6rg@example.com> qp 1 "
           f"uid 1\n").encode("latin-1")
    (tmp_path / "latin.log").write_bytes(raw)
    r = sh("qmail-start-end 0 2000000000 -f latin.log > out.log")
    assert r.status == 0
    assert (tmp_path / "out.log").read_bytes().endswith(b"<j\xf6rg@example.com> qp 1 uid 1\n")


def test_a_reader_that_stops_early_causes_no_traceback(sh) -> None:
    r = sh("for i in 1 2 3 4 5 6 7 8; do cat $FIX/qmail-send.tai64n.log; done "
           "| qmail-start-end 0 2000000000 -f - | show-all | head -1")
    assert len(r.out.splitlines()) == 1
    assert "Traceback" not in r.err


def test_unknown_tool_and_unknown_option_exit_2(sh) -> None:
    r = sh(f"{sys.executable} -m mailyard.logtools show-everything </dev/null; echo $?")
    assert r.out.strip() == "2" and "unknown log tool 'show-everything'" in r.err
    r = sh("show-all --colour < /dev/null")
    assert r.status == 2 and r.err.startswith("usage: show-all")


def test_in_flight_state_is_capped_so_memory_stays_bounded() -> None:
    # 10 000 messages that never end and deliveries that never finish, with caps of 50
    def lines():
        for n in range(10_000):
            yield f"@{unix_to_tai64n(1320718424 + n)} new msg {n}\n"
            yield f"@{unix_to_tai64n(1320718424 + n)} starting delivery {n}: msg {n} to local x\n"
    diag = Diagnostics()
    tracker = Tracker(diag, max_messages=50, max_deliveries=50)
    assert list(attempts(stamped_lines(lines(), "gen", diag), tracker)) == []
    assert len(tracker.messages) == 50 and len(tracker.deliveries) == 50
    assert diag.forgotten == 2 * (10_000 - 50)
    assert "past the memory cap" in diag.summary()


def test_a_message_leaves_the_state_at_end_msg() -> None:
    text = GOOD.read_text()
    diag = Diagnostics()
    tracker = Tracker(diag)
    assert len(list(attempts(stamped_lines(io.StringIO(text), "x", diag), tracker))) == 12
    # left in flight: the message started before the log, and the one with a mangled report
    assert sorted(tracker.messages) == [655300, 655373]
    assert tracker.deliveries == {}

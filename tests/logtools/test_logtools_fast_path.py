"""The block fast path of the Top operators agrees with the line-by-line reference, report
and warning, on generated send logs with every hard case: restarts (clean and crashed),
retries, deliveries without result and results without start, bounces, double and triple
bounces, the three stamp forms, CR LF line ends, malformed and unreadable lines, text after
known lines, and a last line cut short."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.logtools import blocks, filters, operators
from mailyard.logtools.sources import input_lines
from mailyard.logtools.tai64n import unix_to_tai64n
from mailyard.logtools.tracking import Diagnostics, Tracker

ADDRESSES = ["alice@example.com", "bob@gmail.com", "Carol@Example.com", "dave@example.org",
             "example.com-erin@example.com", "x@[192.0.2.1]", "", "#@[]", "noat"]
REPORTS = ["192.0.2.1_accepted_message./Remote_host_said:_250_ok/", "did_0+0+1/",
           "Connected_to_192.0.2.2_but_greeting_failed./", "Sorry,_no_mailbox_here_by_that_name./",
           ""]

# One step of a generated log: the kind and a few small numbers the kind uses.
step = st.one_of(
    st.tuples(st.just("message"), st.integers(1, 6), st.sampled_from(ADDRESSES),
              st.integers(0, 9999)),
    st.tuples(st.just("start"), st.integers(1, 6), st.sampled_from(ADDRESSES),
              st.sampled_from(["local", "remote"])),
    st.tuples(st.just("result"), st.integers(0, 8), st.sampled_from(
        ["success", "deferral", "failure", "mangled"]), st.sampled_from(REPORTS)),
    st.tuples(st.just("end"), st.integers(1, 6), st.none(), st.none()),
    st.tuples(st.just("exiting"), st.none(), st.none(), st.none()),
    st.tuples(st.just("crash"), st.none(), st.none(), st.none()),
    st.tuples(st.just("bounce"), st.integers(1, 6), st.integers(1, 6), st.none()),
    st.tuples(st.just("discard"), st.integers(1, 6), st.sampled_from(["triple", "double"]),
              st.none()),
    st.tuples(st.just("status"), st.none(), st.none(), st.none()),
    st.tuples(st.just("noise"), st.sampled_from([
        "warning: trouble opening local/1/655371; will try again later",
        "alert: unable to append to bounce message; HELP! sleeping...",
        "delivery 7: success", "starting delivery x: msg 1 to remote a@b", "info msg 3: bytes",
        "end msg", "new msg 12a", "bounce msg 1 qp", "double bounce: discarding nothing",
        "tls verified on delivery 3", "starting delivery 9: msg 1 to lemote a@b",
        "info msg 3: bytes 5 from <a> qp 1 uid 2> qp 3 uid 4 tls=1",
        "info msg 4: bytes 5 from <a> qp 1 uid 2x> qp 3 uid 4", "new msg 1234567890123456789012",
        "delivery 12345678901234567890: success: big", "end msg 99999999999999999999 x",
        "starting delivery 123456789012345678901: msg 1 to local a@b",
        "info msg 5: bytes 123456789012345678901234 from <big@example.com> qp 1 uid 0",
        "status: exiting now", "status:exiting", "hold msg 3: administrator",
        "hold msg 2: rate limit a@b.example", "release msg 3", "retry msg 1 now",
        "warning: msg 2 deleted by the administrator",
        "warning: msg 4 bounced by the administrator (2 recipients)",
        "warning: remote deliveries of msg 1 purged by the administrator",
        "hold msg x: y", "retry msg", "warning: msg 9 administrator"]), st.none(), st.none()),
)
line_form = st.sampled_from(["tai64n"] * 6 + ["local", "unix", "crlf", "badstamp", "nostamp"])
# Mostly multilog's own form, so that many blocks take the fast path; sometimes a mix.
line_forms = st.one_of(st.just(["tai64n"]), st.lists(line_form, min_size=1, max_size=8))
# A whole message delivered once: the common case, so results meet their starts often.
whole = st.tuples(st.just("whole"), st.integers(1, 6), st.sampled_from(ADDRESSES),
                  st.sampled_from(["success", "deferral", "failure", "mangled"]))


def render(steps: list[tuple], forms: list[str], extra: bool, cut: bool) -> bytes:
    """The send log of `steps`: qmail-send's lines, stamps in time order."""
    t = 1_320_718_000.0
    number = 0  # the delivery counter of the running qmail-send
    started: list[int] = []
    texts: list[str] = []
    tail = " note=carried" if extra else ""
    for kind, a, b, c in steps:
        if kind == "whole":
            number += 1
            started.append(number)
            texts += [f"new msg {a}", f"info msg {a}: bytes 99 from <{b}> qp 7 uid 0",
                      f"starting delivery {number}: msg {a} to remote r{a}@{b or 'x'}",
                      "status: local 0/10 remote 1/20",
                      f"delivery {number}: report mangled, will defer" if c == "mangled"
                      else f"delivery {number}: {c}: {REPORTS[0]}", f"end msg {a}"]
        elif kind == "message":
            texts += [f"new msg {a}{tail}",
                      f"info msg {a}: bytes {c} from <{b}> qp {a + 100} uid {c % 3}{tail}"]
        elif kind == "start":
            number += 1
            started.append(number)
            texts.append(f"starting delivery {number}: msg {a} to {c} {b or 'nobody'}{tail}")
        elif kind == "result":
            d = started[-1 - a] if a < len(started) else number + a  # a later one: no start
            texts.append(f"delivery {d}: report mangled, will defer" if b == "mangled"
                         else f"delivery {d}: {b}: {c}")
        elif kind == "end":
            texts.append(f"end msg {a}{tail}")
        elif kind in ("exiting", "crash"):
            if kind == "exiting":
                texts.append("status: exiting")
            number, started = 0, []
        elif kind == "bounce":
            texts.append(f"bounce msg {a} qp {b + 100}{tail}")
        elif kind == "discard":
            texts.append(f"{b} bounce: discarding bounce/{a}{tail}")
        elif kind == "status":
            texts.append("status: local 1/10 remote 0/20")
        else:
            texts.append(a)
    out = []
    for i, text in enumerate(texts):
        t += 0.25
        form = forms[i % len(forms)]
        if form == "local":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(t))) + ".250000000"
        elif form == "unix":
            stamp = f"{t:.6f}"
        elif form == "badstamp":
            stamp = "@4000zz"
        elif form == "nostamp":
            stamp = "garbage"
        else:
            stamp = "@" + unix_to_tai64n(t)
        end = "\r\n" if form == "crlf" else "\n"
        out.append(f"{stamp} {text}{end}")
    data = "".join(out).encode()
    return data[:-1] if cut and data else data


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


CASES = [(spec, by, channel) for spec in operators.TOPS
         for by in ("user", "sender", "recipient") for channel in (None, "local", "remote")]


def reference(path: Path, spec: str, by: str, channel: str | None) -> tuple[dict, str]:
    diag = Diagnostics()
    rows = operators.top_rows(input_lines(str(path), diag), Tracker(diag),
                              operators.TOPS[spec], by, channel)
    return rows, diag.summary(), diag.notes()


def fast(data: bytes, name: str, spec: str, by: str, channel: str | None,
         block_bytes: int, native: bool) -> tuple[dict, str]:
    diag = Diagnostics()
    rows = blocks.top_rows_blocks(io.BytesIO(data), name, Tracker(diag), operators.TOPS[spec],
                                  by, channel, block_bytes, native=native)
    return rows, diag.summary(), diag.notes()


def test_the_compiled_core_is_built() -> None:
    # setup.sh builds it (gcc, python3-dev); without it the tools fall back to Python
    assert blocks._fastcount is not None, "run scripts/setup.sh test: _fastcount.c is not built"
    assert blocks.NATIVE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(whole, step), max_size=60), forms=line_forms,
       extra=st.booleans(), cut=st.booleans(), block_bytes=st.sampled_from([64, 300, 1 << 20]),
       case=st.sampled_from(CASES))
def test_fast_path_and_reference_agree(tmp_path: Path, steps, forms, extra, cut, block_bytes,
                                       case) -> None:
    data = render(steps, forms, extra, cut)
    path = tmp_path / "send.log"
    path.write_bytes(data)
    spec, by, channel = case
    expected = reference(path, spec, by, channel)
    assert fast(data, str(path), spec, by, channel, block_bytes, native=False) == expected
    assert fast(data, str(path), spec, by, channel, block_bytes, native=True) == expected


SHOW_CASES = [(results, detail, channel) for results in operators.SHOW_RESULTS.values()
              for detail in (False, True) for channel in (None, "local", "remote")]


def show_reference(path: Path, case: tuple) -> tuple[str, str]:
    diag = Diagnostics()
    out = io.StringIO()
    operators.run_show(input_lines(str(path), diag), out, Tracker(diag), *case)
    return out.getvalue(), diag.summary(), diag.notes()


def show_fast(data: bytes, name: str, case: tuple, block_bytes: int) -> tuple[str, str]:
    diag = Diagnostics()
    out = io.StringIO()
    found = blocks.attempts_blocks(io.BytesIO(data), name, Tracker(diag), block_bytes)
    operators.write_attempts(found, out, *case)
    return out.getvalue(), diag.summary(), diag.notes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(whole, step), max_size=60), forms=line_forms,
       extra=st.booleans(), cut=st.booleans(), block_bytes=st.sampled_from([64, 300, 1 << 20]),
       case=st.sampled_from(SHOW_CASES))
def test_show_fast_path_and_reference_agree(tmp_path: Path, steps, forms, extra, cut,
                                            block_bytes, case) -> None:
    data = render(steps, forms, extra, cut)
    path = tmp_path / "send.log"
    path.write_bytes(data)
    assert show_fast(data, str(path), case, block_bytes) == show_reference(path, case)


def test_a_plain_tai64n_log_takes_the_fast_path() -> None:
    # the equality above would hold trivially if every block fell back to the reference
    steps = [("message", 1, "alice@example.com", 10), ("start", 1, "bob@gmail.com", "remote"),
             ("status", None, None, None), ("result", 0, "success", REPORTS[0]),
             ("end", 1, None, None)]
    data = render(steps, ["tai64n"], extra=True, cut=False)
    lines = data.count(b"\n")
    tracker = Tracker(Diagnostics())
    counter = operators.TopCounter(tracker, operators.TOPS["top-senders"], "sender", None)
    assert blocks._plain(data, lines)
    assert blocks._fast_block(data, lines, tracker, counter)
    assert counter.rows == {"alice@example.com": [1, 1, 1, 0, 0, 10]}
    crlf = render(steps, ["crlf"], extra=False, cut=False)
    assert not blocks._plain(crlf, crlf.count(b"\n"))


def test_the_compiled_core_reads_a_plain_log_without_python() -> None:
    # the agreement above would hold trivially if C left every line to Python
    steps = [("message", 1, "alice@example.com", 10), ("start", 1, "bob@gmail.com", "remote"),
             ("status", None, None, None), ("result", 0, "success", REPORTS[0]),
             ("bounce", 1, 2, None), ("discard", 1, "double", None), ("end", 1, None, None),
             ("exiting", None, None, None)]
    data = render(steps, ["tai64n"], extra=True, cut=False)
    counter = blocks._fastcount.Counter(1, 0, False, 100, 100, 100,
                                        lambda raw, local: raw.decode(), lambda sender: sender,
                                        lambda domain: domain.decode(), "(unknown)")
    assert counter.feed(data, 0) == len(data)
    assert counter.rows() == {"alice@example.com": [1, 1, 1, 0, 0, 10]}
    assert counter.counts() == (1, 0, 0, 0)  # one restart, nothing else
    # a CR LF line is left to Python, at its offset
    crlf = render(steps, ["crlf"], extra=False, cut=False)
    assert counter.feed(crlf, 0) == 0


FILTERS = [("xrcpt", lambda: filters.xrcpt(["bob@gmail.com", "@example.com"])),
           ("xrcpt", lambda: filters.xrcpt(["rnoat@x", "nobody"])),
           ("xsend", lambda: filters.xsend(["alice@example.com", "<>", "@example.org"])),
           ("xuser", lambda: filters.xuser(["example.com"])),
           ("xwebmail", lambda: filters.xwebmail({1}))]


def filter_output(lines, diag: Diagnostics, rules) -> tuple[str, str]:
    out = io.StringIO()
    filters.run_filter(lines, out, Tracker(diag), *rules)
    return out.getvalue(), diag.summary()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(whole, step), max_size=60), forms=line_forms,
       extra=st.booleans(), cut=st.booleans(), block_bytes=st.sampled_from([64, 300, 1 << 20]),
       which=st.sampled_from(range(len(FILTERS))))
def test_filter_block_reader_and_reference_agree(tmp_path: Path, steps, forms, extra, cut,
                                                 block_bytes, which) -> None:
    data = render(steps, forms, extra, cut)
    path = tmp_path / "send.log"
    path.write_bytes(data)
    rules = FILTERS[which][1]()
    diag = Diagnostics()
    expected = filter_output(input_lines(str(path), diag), diag, rules)
    diag = Diagnostics()
    got = filter_output(blocks.filter_lines_blocks(io.BytesIO(data), str(path), diag,
                                                   block_bytes), diag, rules)
    assert got == expected


def test_the_filter_block_reader_skips_status_lines_unread() -> None:
    # the agreement above would hold trivially if every block were read line by line
    steps = [("message", 1, "alice@example.com", 10), ("status", None, None, None),
             ("noise", "warning: trouble opening local/1/655371; will try again later", None,
              None), ("start", 1, "bob@gmail.com", "remote"), ("exiting", None, None, None)]
    data = render(steps, ["tai64n"], extra=False, cut=False)
    texts = [s.text for s in blocks.filter_lines_blocks(io.BytesIO(data), "x", Diagnostics())]
    assert texts == ["new msg 1", "info msg 1: bytes 10 from <alice@example.com> qp 101 uid 1",
                     "starting delivery 1: msg 1 to remote bob@gmail.com", "status: exiting"]

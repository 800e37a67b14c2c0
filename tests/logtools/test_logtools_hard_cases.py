"""The hard cases of real qmail-send logs, through real pipelines of the tools: restarts,
retries across them, deliveries without result, results without start, bounces tied to
their message, double bounces, stamp forms, CR LF and lines carrying new vocabulary."""

from __future__ import annotations

import time
from pathlib import Path

from mailyard.logtools.parser import StartDelivery, TripleBounce, parse
from mailyard.logtools.tai64n import unix_to_tai64n

T0 = 1_320_718_000

# qmail-send runs three times: stopped cleanly (status: exiting), then crashed (no line), and
# each run numbers its deliveries from 1.  Message 10 (alice -> bob) is deferred twice and
# delivered in the third run; message 11 (alice -> carol) starts in the first run and its
# result never comes; "delivery 2: success" in the second run has no start in that run.
RESTARTS = [
    "status: local 0/10 remote 0/20",
    "new msg 10",
    "info msg 10: bytes 1500 from <alice@example.com> qp 500 uid 1001",
    "starting delivery 1: msg 10 to remote bob@example.net",
    "new msg 11",
    "info msg 11: bytes 700 from <alice@example.com> qp 501 uid 1001",
    "starting delivery 2: msg 11 to remote carol@example.org",
    "delivery 1: deferral: Connected_to_192.0.2.9_but_greeting_failed./",
    "status: exiting",
    "status: local 0/10 remote 0/20",
    "starting delivery 1: msg 10 to remote bob@example.net",
    "delivery 1: deferral: Connected_to_192.0.2.9_but_greeting_failed./",
    "delivery 2: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/",
    "status: local 0/10 remote 0/20",
    "starting delivery 1: msg 10 to remote bob@example.net",
    "delivery 1: success: 192.0.2.9_accepted_message./Remote_host_said:_250_ok/",
    "end msg 10",
]

# alice's message bounces; the bounce's own delivery back to her fails too, and the double
# bounce to the postmaster address is discarded.
BOUNCES = [
    "new msg 20",
    "info msg 20: bytes 900 from <alice@example.com> qp 600 uid 1001",
    "starting delivery 5: msg 20 to remote nobody@gone.example",
    "delivery 5: failure: 192.0.2.3_does_not_like_recipient./Remote_host_said:_550_no/",
    "bounce msg 20 qp 601",
    "end msg 20",
    "new msg 21",
    "info msg 21: bytes 1900 from <> qp 601 uid 0",
    "starting delivery 6: msg 21 to local example.com-alice@example.com",
    "delivery 6: failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/",
    "bounce msg 21 qp 602",
    "end msg 21",
    "new msg 22",
    "info msg 22: bytes 2500 from <#@[]> qp 602 uid 0",
    "double bounce: discarding bounce/22",
    "end msg 22",
    "new msg 23",
    "info msg 23: bytes 300 from <eve@example.org> qp 603 uid 1001",
    "starting delivery 7: msg 23 to remote frank@example.net",
    "delivery 7: success: 192.0.2.4_accepted_message./",
    "end msg 23",
]


def write(path: Path, texts: list[str], form: str = "tai64n", end: str = "\n") -> Path:
    lines = []
    for i, text in enumerate(texts):
        t = T0 + i
        if form == "local":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + ".000000000"
        elif form == "unix":
            stamp = f"{t}.000000"
        else:
            stamp = "@" + unix_to_tai64n(t)
        lines.append(f"{stamp} {text}{end}")
    path.write_text("".join(lines))
    return path


def fields(out: str) -> list[tuple[str, ...]]:
    """(result, sender, recipient) of each show-*-detail line."""
    return [tuple(line.split()[2:5]) for line in out.splitlines()]


def test_retries_across_a_clean_stop_and_a_crash_are_all_shown_with_their_sender(
        sh, tmp_path: Path) -> None:
    log = write(tmp_path / "send.log", RESTARTS)
    r = sh(f"qmail-start-end 0 2000000000 -f {log} | xrcpt bob@example.net | show-all-detail")
    assert fields(r.out) == [("deferral", "alice@example.com", "bob@example.net"),
                             ("deferral", "alice@example.com", "bob@example.net"),
                             ("success", "alice@example.com", "bob@example.net")]


def test_a_result_after_a_restart_is_not_given_to_a_delivery_of_the_run_before(
        sh, tmp_path: Path) -> None:
    log = write(tmp_path / "send.log", RESTARTS)
    r = sh(f"top-recipients --csv < {log}")
    assert r.out.splitlines() == [
        "recipient,messages,deliveries,successes,deferrals,failures,bytes",
        "bob@example.net,1,3,1,2,0,1500",
        # started, its result never came: still counted for its message and delivery
        "carol@example.org,1,1,0,0,0,700",
        # "delivery 2: success" of the second run: its start is not in the input
        "(unknown),0,1,1,0,0,0",
    ]
    assert r.err == ("top-recipients: warning: 1 delivery result whose start is not in the "
                     "input, counted in the (unknown) row\n")
    senders = sh(f"top-senders --csv < {log}")
    assert senders.out.splitlines()[1] == "alice@example.com,2,4,1,2,0,2200"
    shown = sh(f"show-all < {log}")
    assert shown.err == ("show-all: warning: skipped 1 delivery result whose start is not in "
                         "the input\n")


def test_a_crash_without_status_exiting_is_seen_at_the_repeated_delivery_number(
        sh, tmp_path: Path) -> None:
    texts = [t for t in RESTARTS if t != "status: exiting"]
    log = write(tmp_path / "send.log", texts)
    assert sh(f"top-recipients --csv < {log}").out == \
        sh(f"top-recipients --csv < {write(tmp_path / 'b.log', RESTARTS)}").out


def test_a_bounce_comes_with_the_message_it_bounces(sh, tmp_path: Path) -> None:
    log = write(tmp_path / "send.log", BOUNCES)
    r = sh(f"xsend alice@example.com < {log}")
    assert "double bounce: discarding bounce/22" in r.out
    assert "eve@example.org" not in r.out
    assert fields(sh(f"xsend alice@example.com < {log} | show-all-detail").out) == [
        ("failure", "alice@example.com", "nobody@gone.example"),
        ("failure", "<>", "alice@example.com")]
    r = sh(f"xrcpt nobody@gone.example < {log} | top-senders --csv")
    assert r.out.splitlines()[1:] == ["<>,1,1,0,0,1,1900", "alice@example.com,1,1,0,0,1,900"]
    assert r.err == ""


def test_double_and_triple_bounce_lines_are_read() -> None:
    assert parse("double bounce: discarding bounce/22") == TripleBounce(22, True)
    assert parse("triple bounce: discarding bounce/23") == TripleBounce(23, False)


def test_the_three_stamp_forms_and_crlf_give_the_same_report(sh, tmp_path: Path) -> None:
    texts = RESTARTS + BOUNCES
    reports = set()
    for form in ("tai64n", "local", "unix"):
        for end in ("\n", "\r\n"):
            log = write(tmp_path / f"{form}.log", texts, form, end)
            r = sh(f"top-domain-stats --csv < {log}")
            assert "malformed" not in r.err and "readable" not in r.err
            reports.add(r.out)
            shown = sh(f"show-all-detail < {log}").out
            assert shown.splitlines()[0].startswith("2011-11-08 02:06:47.000000 deferral ")
    assert len(reports) == 1


def test_mixed_line_ends_in_one_file(sh, tmp_path: Path) -> None:
    texts = RESTARTS + BOUNCES
    plain = write(tmp_path / "plain.log", texts)
    mixed = tmp_path / "mixed.log"
    lines = plain.read_text().splitlines(keepends=True)
    mixed.write_text("".join(line.replace("\n", "\r\n") if i % 3 == 0 else line
                             for i, line in enumerate(lines)))
    assert sh(f"top-senders < {mixed}").out == sh(f"top-senders < {plain}").out
    assert sh(f"show-all < {mixed}").out == sh(f"show-all < {plain}").out


def test_text_after_a_known_line_is_carried_not_an_error(sh, tmp_path: Path) -> None:
    assert parse("starting delivery 3: msg 5 to remote a@b.example tls=verified") == \
        StartDelivery(3, 5, "remote", "a@b.example", "tls=verified")
    texts = [t + " note=new" if t.startswith(("new msg", "end msg", "info msg", "starting"))
             else t for t in RESTARTS]
    log = write(tmp_path / "extra.log", texts)
    plain = write(tmp_path / "plain.log", RESTARTS)
    r = sh(f"top-recipients --csv < {log}")
    assert r.out == sh(f"top-recipients --csv < {plain}").out
    assert "malformed" not in r.err

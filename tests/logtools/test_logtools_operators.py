"""Show and Top operators on a hand-checked qmail-send excerpt (fixtures/qmail-send.*.log).

The excerpt (2011-11-08, times in UTC) holds: a deferral of a message whose start was
rotated away (sender unknown), a delivery result whose start is missing, local and remote
successes, a Yahoo deferral retried an hour later, a Gmail failure and its bounce delivered
locally, a local failure whose bounce is deferred then given up, a double bounce discarded
as a triple bounce, a mangled report, status and warning lines.
"""

from __future__ import annotations

import json

import pytest

STAMP_FORMS = ["qmail-send.tai64n.log", "qmail-send.tai64nlocal-utc.log",
               "qmail-send.unixtime.log"]

SHOW_ALL_DETAIL = """\
2011-11-08 02:13:47.123456 success  alice@example.com carol@example.com local=example.com-carol@example.com did 0+0+1
2011-11-08 02:13:48.500000 deferral ? zed@hotmail.com remote=65.55.1.1 Connected to 65.55.1.1 but sender was rejected. / Remote host said: 451 4.7.500 Server busy. Please try again later.
2011-11-08 02:13:49.250000 success  alice@example.com bob@gmail.com remote=209.85.1.2 209.85.1.2 accepted message. / Remote host said: 250 2.0.0 OK 1320718429 x12si
2011-11-08 02:13:56.000000 deferral dave@example.com eve@yahoo.com remote=98.136.1.2 Connected to 98.136.1.2 but greeting failed. / Remote host said: 421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred
2011-11-08 02:14:06.000000 failure  frank@example.org nobody@gmail.com remote=209.85.1.3 209.85.1.3 does not like recipient. / Remote host said: 550-5.1.1 The email account that you tried to reach does not exist. Please try / 550-5.1.1 double-checking the recipient's email address for typos or / 550-5.1.1 unnecessary spaces. Learn more at / 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123qkb.12 - gsmtp / Giving up on 209.85.1.3.
2011-11-08 02:14:07.000000 success  <> frank@example.org local=example.org-frank@example.org did 0+0+1
2011-11-08 02:14:25.000000 failure  spam@bad.example nosuchuser@example.com local=example.com-nosuchuser@example.com Sorry, no mailbox here by that name. (#5.1.1)
2011-11-08 02:14:28.000000 deferral <> spam@bad.example remote=- Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)
2011-11-08 03:13:46.000000 success  dave@example.com eve@yahoo.com remote=98.136.1.2 98.136.1.2 accepted message. / Remote host said: 250 ok dirdel
2011-11-08 03:15:25.000000 failure  <> spam@bad.example remote=- I'm not going to try again; this message has been in the queue too long.
2011-11-08 03:15:26.000000 failure  #@[] postmaster@example.com local=example.com-postmaster@example.com Sorry, no mailbox here by that name. (#5.1.1)
2011-11-08 03:17:05.000000 mangled  alice@example.com x@broken.example remote=- report mangled, will defer
"""  # noqa: E501


def without_sender(line: str) -> str:
    """The show-all line of a show-all-detail line: the same without the sender field."""
    date, clock, result, _sender, rest = line.split(maxsplit=4)
    return f"{date} {clock} {result:<8} {rest}"


def lines_of(text: str, *results: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if line.split()[2] in results)


@pytest.mark.parametrize("form", STAMP_FORMS)
def test_show_all_detail_reports_every_attempt_with_its_sender(sh, form: str) -> None:
    r = sh(f"show-all-detail < $FIX/{form}")
    assert r.status == 0
    assert r.out == SHOW_ALL_DETAIL


def test_show_all_is_the_detail_report_without_the_sender(sh) -> None:
    r = sh("show-all -f $FIX/qmail-send.tai64n.log")
    expected = "".join(without_sender(line) + "\n" for line in SHOW_ALL_DETAIL.splitlines())
    assert r.out == expected


@pytest.mark.parametrize(("tool", "results"), [
    ("show-success", ("success",)),
    ("show-failures", ("failure",)),
    ("show-deferrals", ("deferral", "mangled")),
])
def test_each_show_operator_keeps_only_its_results(sh, tool: str, results: tuple[str]) -> None:
    detail = sh(f"{tool}-detail < $FIX/qmail-send.tai64n.log")
    assert detail.out == lines_of(SHOW_ALL_DETAIL, *results)
    plain = sh(f"{tool} < $FIX/qmail-send.tai64n.log")
    assert plain.out == "".join(without_sender(x) + "\n" for x in detail.out.splitlines())


def test_a_selector_pipe_into_show_gives_the_same_report_as_the_raw_log(sh) -> None:
    piped = sh("qmail-start-end 1320000000 1330000000 -f $FIX/qmail-send.tai64n.log "
               "| show-all-detail")
    assert piped.out == SHOW_ALL_DETAIL


def test_show_warns_once_about_the_log_starting_mid_message(sh) -> None:
    r = sh("show-all < $FIX/qmail-send.tai64n.log")
    assert r.err.splitlines() == [
        "show-all: warning: skipped 1 delivery result whose start is not in the input; "
        "1 message started before the input (sender unknown, shown as ?)"]


TOP_RECIPIENTS = """\
recipient               messages  deliveries  successes  deferrals  failures  bytes
bob@gmail.com                  1           1          1          0         0   2345
carol@example.com              1           1          1          0         0   2345
eve@yahoo.com                  1           2          1          1         0   1200
frank@example.org              1           1          1          0         0   2100
nobody@gmail.com               1           1          0          0         1    800
nosuchuser@example.com         1           1          0          0         1   4500
postmaster@example.com         1           1          0          0         1   6000
spam@bad.example               1           2          0          1         1   5100
x@broken.example               1           1          0          1         0    999
zed@hotmail.com                1           1          0          1         0      0
(unknown)                      0           1          1          0         0      0
"""


@pytest.mark.parametrize("form", STAMP_FORMS)
def test_top_recipients_counts_messages_attempts_results_and_bytes(sh, form: str) -> None:
    assert sh(f"top-recipients < $FIX/{form}").out == TOP_RECIPIENTS


def test_top_senders_counts_a_message_once_however_many_attempts(sh) -> None:
    r = sh("top-senders < $FIX/qmail-send.tai64n.log")
    assert r.out == """\
sender             messages  deliveries  successes  deferrals  failures  bytes
<>                        2           3          1          1         1   7200
alice@example.com         2           3          2          1         0   3344
#@[]                      1           1          0          0         1   6000
?                         1           1          0          1         0      0
dave@example.com          1           2          1          1         0   1200
frank@example.org         1           1          0          0         1    800
spam@bad.example          1           1          0          0         1   4500
(unknown)                 0           1          1          0         0      0
"""


def test_top_domain_stats_remote_by_recipient_domain(sh) -> None:
    r = sh("top-domain-stats-remote --by recipient < $FIX/qmail-send.tai64n.log")
    assert r.out == """\
domain          messages  deliveries  successes  deferrals  failures  bytes
bad.example            1           2          0          1         1   5100
gmail.com              2           2          1          0         1   3145
yahoo.com              1           2          1          1         0   1200
broken.example         1           1          0          1         0    999
hotmail.com            1           1          0          1         0      0
"""


def test_top_domain_stats_counts_the_nodes_side_of_each_delivery(sh) -> None:
    # local deliveries count for the recipient's domain, remote ones for the sender's
    r = sh("top-domain-stats < $FIX/qmail-send.tai64n.log")
    assert r.out == """\
domain       messages  deliveries  successes  deferrals  failures  bytes
example.com         5           7          3          2         2  15044
<>                  1           2          0          1         1   5100
example.org         2           2          1          0         1   2900
(unknown)           0           1          1          0         0      0
?                   1           1          0          1         0      0
"""


def test_local_and_remote_variants_split_the_deliveries(sh) -> None:
    local = sh("top-recipients-local --csv < $FIX/qmail-send.tai64n.log")
    assert local.out == """\
recipient,messages,deliveries,successes,deferrals,failures,bytes
carol@example.com,1,1,1,0,0,2345
frank@example.org,1,1,1,0,0,2100
nosuchuser@example.com,1,1,0,0,1,4500
postmaster@example.com,1,1,0,0,1,6000
"""
    remote = sh("top-recipients-remote --csv < $FIX/qmail-send.tai64n.log")
    both = sh("top-recipients --csv < $FIX/qmail-send.tai64n.log")
    # the result whose start is not in the input has no known channel: only in the whole
    assert sorted(local.out.splitlines()[1:] + remote.out.splitlines()[1:]
                  + ["(unknown),0,1,1,0,0,0"]) == sorted(both.out.splitlines()[1:])


def test_top_deferrals_and_failures_list_only_users_that_had_them(sh) -> None:
    deferrals = sh("top-deferrals --csv < $FIX/qmail-send.tai64n.log")
    assert deferrals.out.splitlines() == [
        "user,messages,deliveries,successes,deferrals,failures,bytes",
        "<>,1,2,0,1,1,5100",
        "?,1,1,0,1,0,0",
        "alice@example.com,2,2,1,1,0,3344",
        "dave@example.com,1,2,1,1,0,1200",
    ]
    failures = sh("top-failures-local --csv < $FIX/qmail-send.tai64n.log")
    assert failures.out.splitlines() == [
        "user,messages,deliveries,successes,deferrals,failures,bytes",
        "nosuchuser@example.com,1,1,0,0,1,4500",
        "postmaster@example.com,1,1,0,0,1,6000",
    ]


def test_sort_limit_and_json(sh) -> None:
    r = sh("top-recipients --sort bytes --limit 3 --json < $FIX/qmail-send.tai64n.log")
    rows = json.loads(r.out)
    assert [row["recipient"] for row in rows] == ["postmaster@example.com", "spam@bad.example",
                                                  "nosuchuser@example.com"]
    assert rows[0] == {"recipient": "postmaster@example.com", "messages": 1, "deliveries": 1,
                       "successes": 0, "deferrals": 0, "failures": 1, "bytes": 6000}
    by_name = sh("top-senders --sort sender --csv < $FIX/qmail-send.tai64n.log")
    keys = [line.split(",")[0] for line in by_name.out.splitlines()[1:]]
    assert keys == sorted(keys)


def test_an_empty_input_gives_an_empty_report(sh) -> None:
    assert sh("top-senders --json < /dev/null").out == "[]\n"
    assert sh("show-all < /dev/null").out == ""
    assert sh("top-senders < /dev/null").out.split() == [
        "sender", "messages", "deliveries", "successes", "deferrals", "failures", "bytes"]


@pytest.mark.parametrize("args", ["top-senders --sort size", "top-senders --limit -1",
                                  "top-senders --json --csv", "show-all --frobnicate",
                                  "show-all extra-argument"])
def test_bad_operator_options_print_usage_and_exit_2(sh, args: str) -> None:
    r = sh(f"{args} < /dev/null")
    assert r.status == 2
    assert "usage:" in r.err
    assert "Traceback" not in r.err

"""Every line our node writes to its send log is known to the log tools: the administrator's
actions on a queued message (`hold msg N: REASON`, `release msg N`, `retry msg N`, and the
warnings for a message deleted, bounced or purged by the administrator) are parsed, counted
in a note, shown by show-all and passed by the x-filters with their message; never counted
as malformed or dropped.  Real pipelines of the tools, as an administrator types them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.logtools.parser import Malformed, QueueAction, parse
from mailyard.logtools.tai64n import unix_to_tai64n

# (the line the node writes, the event, how show-all shows it after the time)
NODE_LINES = [
    ("hold msg 655364: administrator", QueueAction(655364, "hold", "administrator"),
     "hold     - msg=655364 administrator"),
    ("hold msg 655364: rate limit alice@example.com",
     QueueAction(655364, "hold", "rate limit alice@example.com"),
     "hold     - msg=655364 rate limit alice@example.com"),
    ("release msg 655364", QueueAction(655364, "release"), "release  - msg=655364"),
    ("retry msg 655364", QueueAction(655364, "retry"), "retry    - msg=655364"),
    ("warning: msg 655364 deleted by the administrator", QueueAction(655364, "delete"),
     "delete   - msg=655364"),
    ("warning: msg 655364 bounced by the administrator (1 recipients)",
     QueueAction(655364, "bounce"), "bounce   - msg=655364"),
    ("warning: remote deliveries of msg 655364 purged by the administrator",
     QueueAction(655364, "purge-remote"), "purge-remote - msg=655364"),
]
NOTE = {"hold": "1 hold", "release": "1 release", "retry": "1 retry", "delete": "1 delete",
        "bounce": "1 bounce", "purge-remote": "1 purge-remote"}


@pytest.mark.parametrize(("text", "event", "shown"), NODE_LINES)
def test_each_node_line_is_its_event(text: str, event: QueueAction, shown: str) -> None:
    assert parse(text) == event
    # text after the line is carried, not an error (a hold's reason is the rest of its line)
    more = event._replace(reason=event.reason + " and more") if event.action == "hold" else event
    assert parse(text + " and more") == more


@pytest.mark.parametrize("text", ["hold msg 12a: administrator", "hold msg 5:", "retry msg x",
                                  "release msg 1x"])
def test_a_broken_node_line_is_malformed(text: str) -> None:
    assert isinstance(parse(text), Malformed)


def write_log(path: Path, action_line: str) -> None:
    """A message from alice held (or ...) between a deferral and its retried delivery."""
    t = 1_764_633_600.0
    texts = ["new msg 655364", "info msg 655364: bytes 2048 from <alice@example.com> qp 31 uid 0",
             "starting delivery 1: msg 655364 to remote bob@gmail.com",
             "delivery 1: deferral: Connected_to_192.0.2.7_but_greeting_failed./",
             action_line,
             "starting delivery 2: msg 655364 to remote bob@gmail.com",
             "delivery 2: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/",
             "end msg 655364",
             "new msg 655370", "info msg 655370: bytes 10 from <zed@other.example> qp 32 uid 0",
             "starting delivery 3: msg 655370 to remote carol@gmail.com",
             "delivery 3: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/",
             "end msg 655370"]
    path.write_text("".join(f"@{unix_to_tai64n(t + i)} {x}\n" for i, x in enumerate(texts)))


@pytest.mark.parametrize(("text", "event", "shown"), NODE_LINES)
def test_show_all_shows_the_action_and_every_tool_counts_it(sh, tmp_path: Path, text: str,
                                                            event: QueueAction,
                                                            shown: str) -> None:
    log = tmp_path / "send.log"
    write_log(log, text)
    r = sh(f"show-all < {log}")
    assert r.status == 0
    lines = r.out.splitlines()
    assert [line.split(" ", 2)[2] for line in lines][1] == shown
    assert [line.split()[2] for line in lines] == ["deferral", event.action, "success", "success"]
    note = f"show-all: note: the administrator's actions on queued messages: {NOTE[event.action]}"
    assert r.err.strip() == note  # a note, and no warning (nothing malformed or skipped)
    detail = sh(f"show-all-detail < {log}")
    assert detail.out.splitlines()[1].split(" ", 2)[2] == shown.replace(
        " - ", " alice@example.com - ", 1)
    # the counts stay those of the deliveries; the action is in the note
    top = sh(f"top-domain-stats-remote --by recipient --csv < {log}")
    assert top.out.splitlines()[1:] == ["gmail.com,2,3,2,1,0,2058"]
    assert top.err.strip() == note.replace("show-all", "top-domain-stats-remote")


@pytest.mark.parametrize(("text", "event", "shown"), NODE_LINES)
def test_the_x_filters_pass_the_action_with_its_message(sh, tmp_path: Path, text: str,
                                                        event: QueueAction, shown: str) -> None:
    log = tmp_path / "send.log"
    write_log(log, text)
    for chosen in ("xrcpt bob@gmail.com", "xsend alice@example.com"):
        r = sh(f"{chosen} < {log}")
        assert text in r.out, chosen
        assert "655370" not in r.out  # the other message is not passed
        shown_all = sh(f"{chosen} < {log} | show-all")
        assert [line.split()[2] for line in shown_all.out.splitlines()] == \
            ["deferral", event.action, "success"]
    other = sh(f"xrcpt carol@gmail.com < {log}")
    assert text not in other.out

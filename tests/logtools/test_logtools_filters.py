"""X-filters keep messages whole, chain, and feed any operator."""

from __future__ import annotations

import pwd
from pathlib import Path

from conftest import FIXTURES

LOG = "$FIX/qmail-send.tai64n.log"


def results(out: str) -> list[tuple[str, ...]]:
    """(result, sender, recipient) of each show-*-detail line."""
    return [tuple(line.split()[2:5]) for line in out.splitlines()]


def test_xsend_passes_the_delivery_lines_of_the_senders_messages(sh) -> None:
    r = sh(f"qmail-start-end 0 2000000000 -f {LOG} | xsend alice@example.com")
    lines = [line[26:] for line in r.out.splitlines()]
    # the delivery result lines do not name alice, but they are hers
    assert "delivery 3: success: 209.85.1.2_accepted_message./Remote_host_said:_250_2.0.0_OK_" \
           "1320718429_x12si/" in lines
    assert lines[:3] == ["new msg 655364",
                         "info msg 655364: bytes 2345 from <alice@example.com> qp 4001 uid 1001",
                         "starting delivery 2: msg 655364 to local example.com-carol@example.com"]
    assert not any(line.startswith("status:") for line in lines)
    assert sh(f"qmail-start-end 0 2000000000 -f {LOG} | xsend alice@example.com "
              f"| show-all-detail").out.count("alice@example.com") == 3


def test_xsend_is_case_insensitive_and_takes_domains_and_the_null_sender(sh) -> None:
    r = sh(f"xsend ALICE@Example.COM < {LOG} | show-all-detail")
    assert {s for _, s, _ in results(r.out)} == {"alice@example.com"}
    r = sh(f"xsend @example.org '<>' < {LOG} | show-all-detail")
    # a bounce passes with the message it bounces: here the double bounce to the postmaster
    assert results(r.out) == [("failure", "frank@example.org", "nobody@gmail.com"),
                              ("success", "<>", "frank@example.org"),
                              ("deferral", "<>", "spam@bad.example"),
                              ("failure", "<>", "spam@bad.example"),
                              ("failure", "#@[]", "postmaster@example.com")]


def test_xrcpt_keeps_only_that_recipients_deliveries_but_knows_their_sender(sh) -> None:
    r = sh(f"qmail-last-x '1000 weeks' -f {LOG} | xrcpt eve@yahoo.com | show-all-detail")
    assert results(r.out) == [("deferral", "dave@example.com", "eve@yahoo.com"),
                              ("success", "dave@example.com", "eve@yahoo.com")]
    # a message to two recipients: only the named one's delivery passes
    r = sh(f"xrcpt carol@example.com < {LOG} | show-all-detail")
    assert results(r.out) == [("success", "alice@example.com", "carol@example.com")]


def test_xrcpt_matches_local_recipients_without_the_virtual_domain_prefix(sh) -> None:
    r = sh(f"xrcpt nosuchuser@example.com < {LOG} | show-failures")
    assert r.out.split()[3:5] == ["nosuchuser@example.com",
                                  "local=example.com-nosuchuser@example.com"]


def test_xrcpt_passes_deliveries_of_messages_started_before_the_input(sh) -> None:
    r = sh(f"xrcpt zed@hotmail.com < {LOG} | show-all-detail")
    assert results(r.out) == [("deferral", "?", "zed@hotmail.com")]


def test_filters_chain(sh) -> None:
    r = sh(f"qmail-last-x '1000 weeks' -f {LOG} | xsend alice@example.com | xrcpt bob@gmail.com "
           f"| show-all-detail")
    assert results(r.out) == [("success", "alice@example.com", "bob@gmail.com")]
    r = sh(f"xsend alice@example.com < {LOG} | xrcpt eve@yahoo.com | show-all")
    assert r.out == ""


def test_xuser_selects_mail_from_and_to_the_users_domains(sh) -> None:
    r = sh(f"xuser mailgag1 --domains example.org < {LOG} | show-all-detail")
    assert results(r.out) == [("failure", "frank@example.org", "nobody@gmail.com"),
                              ("success", "<>", "frank@example.org")]
    r = sh(f"xuser mailgag1 --domains gmail.com,yahoo.com < {LOG} | top-recipients --csv")
    # frank's message to nobody@gmail.com failed; its bounce back to frank comes with it
    assert [line.split(",")[0] for line in r.out.splitlines()[1:]] == [
        "bob@gmail.com", "eve@yahoo.com", "frank@example.org", "nobody@gmail.com"]


def test_xuser_without_domains_or_node_says_what_to_give(sh) -> None:
    r = sh(f"xuser mailgag1 < {LOG}")
    assert r.status == 2
    assert "--domains a.com,b.com" in r.err and "Traceback" not in r.err


def test_xwebmail_selects_messages_injected_with_the_webmail_uid(sh) -> None:
    # the webmail's message failed; the bounce back to its sender is tied to it and shown
    webmail = [("failure", "frank@example.org", "nobody@gmail.com"),
               ("success", "<>", "frank@example.org")]
    r = sh(f"qmail-last-x '1000 weeks ago' -f {LOG} | xwebmail --uid 89 | show-all-detail")
    assert results(r.out) == webmail
    r = sh(f"xwebmail < {LOG} | show-all-detail", MAILYARD_WEBMAIL_UID="89")
    assert results(r.out) == webmail


def test_xwebmail_without_arguments_or_node_takes_debians_web_server_user(sh, tmp_path) -> None:
    log = tmp_path / "send.log"
    www = pwd.getpwnam("www-data").pw_uid
    log.write_text(Path(LOG.replace("$FIX", str(FIXTURES))).read_text()
                   .replace("uid 89", f"uid {www}"))
    r = sh(f"xwebmail < {log} | show-all-detail")
    assert r.status == 0
    assert results(r.out) == [("failure", "frank@example.org", "nobody@gmail.com"),
                              ("success", "<>", "frank@example.org")]
    r = sh(f"xwebmail --clients 127.0.0.1 < {log}")
    assert r.status == 2 and "--clients needs the node's SMTP logs" in r.err


def test_filter_output_feeds_top_operators(sh) -> None:
    r = sh(f"xsend dave@example.com < {LOG} | top-domain-stats-remote --by recipient --csv")
    assert r.out.splitlines() == ["domain,messages,deliveries,successes,deferrals,failures,bytes",
                                  "yahoo.com,1,2,1,1,0,1200"]

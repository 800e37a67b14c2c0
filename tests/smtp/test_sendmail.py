"""The sendmail program: flags of cron / PHP mail(), uid, default domain, blacklist, failures."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from smtp_helpers import JOE, change, leftovers, queue_entries

from mailyard.home import Home
from mailyard.smtp.sendmail import (
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_USAGE,
    SendmailError,
    parse_args,
    qualify,
    run,
)
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import load_settings

SENDMAIL = str(Path(sys.executable).parent / "sendmail")  # ours, not Debian's /usr/sbin one


def sendmail(home: Home | None, args: list[str], data: bytes, *,
             env_home: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MAILYARD_HOME"}
    if env_home and home is not None:
        env["MAILYARD_HOME"] = str(home.root)
    return subprocess.run([SENDMAIL, *args], input=data, capture_output=True, env=env, timeout=60)


# ---- options, without a process -----------------------------------------------------------------


def test_option_syntax_of_other_sendmails() -> None:
    o = parse_args(["-t", "-oi", "-fapp@example.org", "-F", "The App", "--", "-odd@x.test"])
    assert o.extract and not o.dot_ends and o.sender == "app@example.org"
    assert o.full_name == "The App" and o.recipients == ["-odd@x.test"]
    o = parse_args(["-i", "-f", "<>", "-odi", "-oem", "-B", "8BITMIME", "a@x.test,b@y.test"])
    assert o.sender == "<>" and o.recipients == ["a@x.test,b@y.test"] and not o.dot_ends
    assert parse_args(["-ti"]).extract and not parse_args(["-ti"]).dot_ends
    with pytest.raises(SendmailError) as err:
        parse_args(["-bp"])
    assert err.value.status == EX_USAGE
    with pytest.raises(SendmailError):
        parse_args(["-Q"])
    with pytest.raises(SendmailError):
        parse_args(["-f"])


def test_qualify() -> None:
    assert qualify("fred", "example.org") == "fred@example.org"
    assert qualify("<a@X.Test>", "example.org") == "a@x.test"
    assert qualify("<>", "example.org") == ""
    assert qualify('"joe"@Example.ORG', "example.org") == "joe@example.org"
    assert qualify('" joe"@example.org', "example.org") == '" joe"@example.org'
    for bad in ("a@b@c.test", "a b@c.test", "a@b.test\nBcc: x@y.test"):
        with pytest.raises(SendmailError):
            qualify(bad, "example.org")


# ---- the program ----------------------------------------------------------------------------------


def test_plain_use_as_cron_does(node: Home) -> None:
    out = sendmail(node, [JOE], b"Subject: cron job\n\nall done\n")
    assert out.returncode == 0, out.stderr
    [(envelope, data)] = queue_entries(node)
    assert envelope["recipients"] == [JOE] and envelope["uid"] == 0
    assert envelope["sender"] == "root@mx.example.test"  # login @ default domain
    assert data.startswith(b"Received: (mailyard-sendmail invoked by uid 0); ")
    assert b"\nFrom: " in data and b"\nDate: " in data and b"\nMessage-ID: <" in data
    assert data.endswith(b"Subject: cron job\n\nall done\n")


def test_php_style_minus_t_minus_i_with_sender_and_name(node: Home) -> None:
    message = (b"To: Joe <joe@example.org>, friend@elsewhere.test\n"
               b"Cc: second@elsewhere.test\nBcc: hidden@elsewhere.test\nSubject: php\n\n"
               b"line one\n.\nafter a lone dot\n")
    out = sendmail(node, ["-t", "-i", "-f", "webapp@example.org", "-F", "Web App"], message)
    assert out.returncode == 0, out.stderr
    [(envelope, data)] = queue_entries(node)
    assert envelope["sender"] == "webapp@example.org"
    assert envelope["recipients"] == [JOE, "friend@elsewhere.test", "second@elsewhere.test",
                                      "hidden@elsewhere.test"]
    assert b"hidden@elsewhere.test" not in data  # Bcc never travels
    assert b"From: Web App <webapp@example.org>\n" in data
    assert data.endswith(b"line one\n.\nafter a lone dot\n")


def test_without_i_a_lone_dot_ends_the_message(node: Home) -> None:
    out = sendmail(node, [JOE], b"Subject: dot\n\nkept\n.\nnot kept\n")
    assert out.returncode == 0, out.stderr
    [(_, data)] = queue_entries(node)
    assert data.endswith(b"\n\nkept\n")


def test_bare_names_get_the_default_domain(node: Home) -> None:
    change(node, {"server.default_domain": "example.org"})
    out = sendmail(node, ["-f", "cron", "joe"], b"Subject: x\n\ny\n")
    assert out.returncode == 0, out.stderr
    [(envelope, _)] = queue_entries(node)
    assert envelope["sender"] == "cron@example.org" and envelope["recipients"] == [JOE]


def test_outbound_blacklist_refuses_and_queues_nothing(node: Home) -> None:
    change(node, {"smtp.outbound_blacklist": "@forbidden.test"})
    out = sendmail(node, [JOE, "boss@forbidden.test"], b"Subject: x\n\ny\n")
    assert out.returncode == 77
    assert b"boss@forbidden.test is not allowed" in out.stderr
    assert b"nothing was sent" in out.stderr
    assert leftovers(node) == []


def test_a_quoted_spelling_does_not_pass_the_outbound_blacklist(node: Home) -> None:
    change(node, {"smtp.outbound_blacklist": "boss@forbidden.test"})
    out = sendmail(node, ['"boss"@Forbidden.test'], b"Subject: x\n\ny\n")
    assert out.returncode == 77, out.stderr
    assert b"boss@forbidden.test is not allowed" in out.stderr
    assert leftovers(node) == []


def test_message_over_the_size_limit_is_refused(node: Home) -> None:
    change(node, {"smtp.message_size_mb": 1})
    out = sendmail(node, [JOE], b"Subject: big\n\n" + b"x" * 1_200_000 + b"\n")
    assert out.returncode == 65 and b"larger than the limit" in out.stderr
    assert leftovers(node) == []


def test_no_recipients_is_a_usage_error(node: Home) -> None:
    out = sendmail(node, [], b"Subject: nobody\n\n")
    assert out.returncode == EX_USAGE and b"no recipients" in out.stderr


def test_home_flag_instead_of_environment(node: Home) -> None:
    out = sendmail(node, ["--home", str(node.root), JOE], b"Subject: x\n\ny\n", env_home=False)
    assert out.returncode == 0, out.stderr
    assert len(queue_entries(node)) == 1


def test_missing_home_is_explained(tmp_path: Path) -> None:
    out = sendmail(None, ["--home", str(tmp_path / "none"), JOE], b"x\n")
    assert out.returncode == 75 and b"is not a mailyard home" in out.stderr


def sendmail_as(user: str, home: Home, args: list[str], data: bytes) -> tuple[int, str]:
    """Run sendmail's code as another user: fork, drop to that user, call `run`.

    The interpreter of this test machine lives under /root (0700), so another user cannot
    exec the sendmail script itself; everything it needs is imported before the fork."""
    load_settings(home)  # imports the store's drivers while we are still root
    dispose_all()
    entry = pwd.getpwnam(user)
    read_err, write_err = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = EX_SOFTWARE
        try:
            os.close(read_err)
            os.initgroups(user, entry.pw_gid)  # as a login or cron gives them
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.environ["MAILYARD_HOME"] = str(home.root)
            run(args, io.BytesIO(data))
            status = 0
        except SendmailError as exc:
            os.write(write_err, str(exc).encode())
            status = exc.status
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(write_err, repr(exc).encode())
        finally:
            os._exit(status)
    os.close(write_err)
    with os.fdopen(read_err, "rb") as err:
        message = err.read().decode()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), message


def test_calling_users_uid_is_recorded(node: Home) -> None:
    status, message = sendmail_as("mailyard", node, [JOE], b"Subject: mail user\n\nhi\n")
    assert status == 0, message
    [(envelope, data)] = queue_entries(node)
    uid = pwd.getpwnam("mailyard").pw_uid
    assert envelope["uid"] == uid and envelope["sender"] == "mailyard@mx.example.test"
    assert f"invoked by uid {uid})".encode() in data


def test_user_without_access_to_the_node_gets_a_temporary_failure(node: Home) -> None:
    status, message = sendmail_as("nobody", node, [JOE], b"Subject: x\n\ny\n")
    assert status == EX_TEMPFAIL, message
    assert message.startswith("sendmail: ") and "nothing was sent" in message
    assert queue_entries(node) == []


def test_unwritable_queue_exits_non_zero_with_a_clear_message(node: Home) -> None:
    tmp = node.queue_dir / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(exist_ok=True)
    tmp.write_text("not a directory")  # even root cannot create message files now
    out = sendmail(node, [JOE], b"Subject: x\n\ny\n")
    assert out.returncode == 75
    assert out.stderr.startswith(b"sendmail: cannot queue the message: ")
    assert b"nothing was sent" in out.stderr
    assert queue_entries(node) == []

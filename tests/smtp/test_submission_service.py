"""The submission service: STARTTLS + AUTH on the submission port, implicit TLS on smtps."""

from __future__ import annotations

import smtplib
import ssl
import subprocess

import pytest
from smtp_helpers import JOE, JOE_PASSWORD, RawClient, change, queue_entries

from mailyard.home import Home

MESSAGE = b"From: joe@example.org\r\nTo: friend@elsewhere.test\r\nSubject: out\r\n\r\nHello.\r\n"


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the node's certificate is self-signed
    return ctx


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--helo", "laptop.test", *args], capture_output=True,
                          text=True, timeout=90)


def test_swaks_starttls_and_auth_on_submission(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("submission")
    out = swaks("--server", f"127.0.0.1:{node.port('submission')}", "--tls",
                "--auth", "PLAIN", "--auth-user", JOE, "--auth-password", JOE_PASSWORD,
                "--from", JOE, "--to", "friend@elsewhere.test", "--body", "via submission")
    assert out.returncode == 0, out.stdout + out.stderr
    [(envelope, data)] = queue_entries(node)
    assert envelope["auth_user"] == JOE and envelope["protocol"] == "ESMTPSA"
    assert envelope["recipients"] == ["friend@elsewhere.test"]
    assert b"with ESMTPSA" in data and b"via submission" in data
    svc.wait_log(f"auth ip=127.0.0.1 user={JOE} mechanism=PLAIN")
def test_swaks_implicit_tls_and_auth_login_on_smtps(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("submission")
    out = swaks("--server", f"127.0.0.1:{node.port('smtps')}", "--tls-on-connect",
                "--auth", "LOGIN", "--auth-user", JOE, "--auth-password", JOE_PASSWORD,
                "--from", JOE, "--to", "friend@elsewhere.test", "--body", "via smtps")
    assert out.returncode == 0, out.stdout + out.stderr
    [(envelope, data)] = queue_entries(node)
    assert envelope["auth_user"] == JOE and b"via smtps" in data


def test_smtplib_starttls_login_and_send(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("submission")
    with smtplib.SMTP("127.0.0.1", node.port("submission")) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")  # never AUTH in clear here
        assert s.mail(JOE)[0] == 530  # TLS first
        s.starttls(context=client_tls())
        s.ehlo()
        assert s.has_extn("auth") and not s.has_extn("starttls")
        assert s.mail(JOE)[0] == 530  # then AUTH
        s.rset()
        s.login(JOE, JOE_PASSWORD)
        assert s.sendmail(JOE, ["friend@elsewhere.test"], MESSAGE) == {}
    assert len(queue_entries(node)) == 1


def test_smtplib_over_implicit_tls(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("submission")
    with smtplib.SMTP_SSL("127.0.0.1", node.port("smtps"), context=client_tls()) as s:
        s.ehlo()
        assert s.has_extn("auth") and not s.has_extn("starttls")
        s.login(JOE, JOE_PASSWORD)
        assert s.sendmail(JOE, ["friend@elsewhere.test"], MESSAGE) == {}
    [(envelope, _)] = queue_entries(node)
    assert envelope["protocol"] == "ESMTPSA"


def test_wrong_password_is_refused_and_slowed_down(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("submission")
    with smtplib.SMTP_SSL("127.0.0.1", node.port("smtps"), context=client_tls()) as s:
        s.ehlo()
        for attempt in (1, 2):
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                s.login(JOE, "wrong password")
            assert err.value.smtp_code == 535
            svc.wait_log(f"failures={attempt} delay={2 ** (attempt - 1)}s")
        s.login(JOE, JOE_PASSWORD)  # the right one still works, and clears the count
    svc.wait_log("rule=AUTH_FAILED value=joe@example.org")
def test_unknown_user_cannot_log_in(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("submission")
    with smtplib.SMTP_SSL("127.0.0.1", node.port("smtps"), context=client_tls()) as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("nobody@example.org", JOE_PASSWORD)


def test_authenticated_user_may_relay_but_not_past_the_outbound_blacklist(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.outbound_blacklist": "@forbidden.test"})
    start("submission")
    with smtplib.SMTP_SSL("127.0.0.1", node.port("smtps"), context=client_tls()) as s:
        s.login(JOE, JOE_PASSWORD)
        s.mail(JOE)
        assert s.rcpt("friend@elsewhere.test")[0] == 250
        assert s.rcpt("x@forbidden.test")[0] == 553


def test_submission_port_is_a_setting(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"submission.port": 2525})
    start("submission")
    c = RawClient(2525 + node.port_base)
    assert c.code() == 220
    c.close()


# mode -> (STARTTLS offered in clear, AUTH offered in clear, AUTH offered after TLS)
PRIMARY_MODES = {
    "auth_no/tls_no": (False, False, False),
    "auth_no/tls_optional": (True, False, False),
    "auth_optional/tls_no": (False, True, True),
    "auth_optional/tls_optional": (True, True, True),
    "auth_withtls/tls_optional": (True, False, True),
}


@pytest.mark.parametrize("mode", sorted(PRIMARY_MODES))
def test_each_auth_mode_on_port_25_with_a_real_client(node: Home, start, mode: str) -> None:  # type: ignore[no-untyped-def]
    starttls, auth_clear, auth_tls = PRIMARY_MODES[mode]
    change(node, {"smtp.auth_mode": mode})
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        assert s.has_extn("starttls") is starttls
        assert s.has_extn("auth") is auth_clear
        logged_in = False
        if auth_clear:
            s.login(JOE, JOE_PASSWORD)
            logged_in = True
        elif starttls:
            s.starttls(context=client_tls())
            s.ehlo()
            assert s.has_extn("auth") is auth_tls
            if auth_tls:
                s.login(JOE, JOE_PASSWORD)
                logged_in = True
            else:
                assert s.docmd("AUTH", "PLAIN")[0] == 502
        # Mail for a local mailbox is accepted in every mode of port 25: from anyone, or, once
        # logged in, from the login's own address (smtp.sender_login_match).
        assert s.sendmail(JOE if logged_in else "a@remote.test", [JOE], MESSAGE) == {}

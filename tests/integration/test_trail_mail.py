"""`mailyard trail` on a running node: real mail in by SMTP (smtplib, STARTTLS), one local
delivery, one recipient refused at RCPT, one remote delivery deferred (its route is a closed
loopback port), and what `mailyard trail ... --json` says about each."""

from __future__ import annotations

import json
import smtplib
import ssl
import subprocess
import time
from email.message import EmailMessage

import pytest
from tests.conftest import VENV_BIN, free_port
from tests.waiting import wait_until

from mailyard.home import Home
from mailyard.store.settings_store import set_many


@pytest.fixture
def routed(home: Home, dns_server) -> Home:
    """far.example is routed to a loopback port nothing listens on; DNS is the test's own."""
    set_many(home, {"send.smtp_routes": [f"far.example:127.0.0.1:{free_port()}"],
                    "smtp.dns_resolver": dns_server.setting})
    return home


def _trail(env: dict[str, str], *args: str) -> tuple[int, dict, str]:
    out = subprocess.run([str(VENV_BIN / "mailyard"), "trail", *args], env=env,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, json.loads(out.stdout) if "--json" in args and out.stdout else {}, \
        out.stdout + out.stderr


def _wait_trail(env: dict[str, str], query: str, ready, what: str) -> dict:
    def found() -> dict | None:
        status, trail, text = _trail(env, query, "--json")
        assert status == 0, text
        return trail if ready(trail) else None

    return wait_until(found, what=f"the trail of {query} to show {what}")


def test_trail_of_real_mail(routed: Home, running_node: Home, cli_env) -> None:
    home = running_node
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.net", "ann@example.test", "trail"
    msg["Message-ID"] = "<trail.1@client.example.net>"
    msg.set_content("did it arrive?\n")
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=30) as smtp:
        smtp.ehlo("client.example.net")
        smtp.starttls(context=tls)
        smtp.ehlo("client.example.net")
        smtp.mail("someone@example.net")
        assert smtp.rcpt("ann@example.test")[0] == 250
        assert smtp.rcpt("nosuch@example.test")[0] == 550
        assert smtp.rcpt("x@far.example")[0] == 250  # 127.0.0.1 is a relay network
        code, reply = smtp.data(msg.as_bytes())
        assert code == 250
    qid = reply.decode().rsplit(" ", 1)[-1]

    def settled(found: dict) -> bool:
        states = found["messages"][0]["recipients"] if found["messages"] else {}
        return states.get("ann@example.test") == "delivered" and \
            states.get("x@far.example") == "deferred"

    found = _wait_trail(cli_env, qid, settled, "one local delivery and one deferral")
    (m,) = found["messages"]
    assert m["qid"] == int(qid) and m["state"] == "deferred"
    a = m["accepted"]
    assert a["ip"] == "127.0.0.1" and a["helo"] == "client.example.net"
    assert a["tls"].startswith("TLSv1"), a
    assert a["msgid"] == "trail.1@client.example.net"
    assert a["sender"] == "someone@example.net"
    assert sorted(a["recipients"]) == ["ann@example.test", "x@far.example"]
    assert a["reply"] == f"250 2.0.0 Ok: queued as {qid}"
    local = next(t for t in m["attempts"] if t["channel"] == "local")
    assert local["result"] == "success" and local["maildir_folder"] == "INBOX"
    delivered = home.maildir("ann@example.test") / "new" / local["maildir_file"]
    assert b"did it arrive?" in delivered.read_bytes()
    remote = next(t for t in m["attempts"] if t["channel"] == "remote")
    assert remote["result"] == "deferral" and remote["report"]

    # the same message by its Message-ID and by an address; the refusal by address
    by_id = _wait_trail(cli_env, "<trail.1@client.example.net>", lambda f: f["messages"], "id")
    assert [x["qid"] for x in by_id["messages"]] == [int(qid)]
    by_sender = _wait_trail(cli_env, "someone@example.net",
                            lambda f: f["messages"] and f["refusals"], "sender")
    assert [x["qid"] for x in by_sender["messages"]] == [int(qid)]
    (refused,) = by_sender["refusals"]
    assert refused["rule"] == "NO_SUCH_USER" and refused["reply"] == "550 5.1.1"
    assert refused["sender"] == "someone@example.net"
    assert "nosuch@example.test" in refused["value"]
    by_rcpt = _wait_trail(cli_env, "nosuch@example.test", lambda f: f["refusals"], "rcpt")
    assert by_rcpt["messages"] == []

    # the text form, and a refused query and --since
    status, _, text = _trail(cli_env, qid)
    assert status == 0 and "accepted" in text and "ann@example.test" in text, text
    status, _, text = _trail(cli_env, "not a query")
    assert status == 2 and "is not an address" in text
    status, _, text = _trail(cli_env, qid, "--since", "3 fortnights")
    assert status == 2 and "--since" in text and "fortnights" in text
    status, later, _ = _trail(cli_env, qid, "--since", str(int(time.time()) + 3600), "--json")
    assert status == 0 and later["messages"] == []

    # authenticated submission: the service and the user it logged in as
    with smtplib.SMTP("127.0.0.1", home.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=tls)
        smtp.login("bob@example.test", "bob password")
        smtp.sendmail("bob@example.test", ["ann@example.test"], b"Subject: from bob\r\n\r\nhi\r\n")
    by_bob = _wait_trail(cli_env, "bob@example.test", lambda f: any(
        x["state"] == "delivered" for x in f["messages"]), "bob's message delivered")
    (sent,) = by_bob["messages"]
    assert sent["accepted"]["service"] == "submission"
    assert sent["accepted"]["user"] == "bob@example.test"
    assert sent["accepted"]["msgid"] == ""  # the message has no Message-ID header

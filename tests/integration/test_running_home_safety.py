"""A running node (services up, mail delivered, filters on) keeps its secrets from other
local users, and its spam and virus daemons are reached only through the mail owner's group
(issue 16, items 4 and 12)."""

from __future__ import annotations

import grp
import os
import smtplib
import stat
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.foundation.home_audit import exposed, listing
from tests.integration.conftest import LIGHT, only_services

from mailyard.filters import clamd, spamd
from mailyard.services import control
from mailyard.store import accounts

WITH_FILTERS = LIGHT + ("spamd", "clamd")


@pytest.fixture
def node_with_filters(home):
    accounts.add_domain(home, "example.test", owner="web1")
    accounts.add_mailbox(home, "ann@example.test", "ann password")
    only_services(home, WITH_FILTERS)
    try:
        control.up(home, timeout=120)
        yield home
    finally:
        control.down(home)


def _deliver(home) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "x@example.org", "ann@example.test", "audit"
    msg.set_content("a message, so that queue, logs and the mailbox have something\n")
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=30) as client:
        client.send_message(msg)
    new = home.maildir("ann@example.test") / "new"
    deadline = time.monotonic() + 60
    while not (new.is_dir() and any(new.iterdir())):
        assert time.monotonic() < deadline, "the message was not delivered"
        time.sleep(0.2)


def test_a_running_home_keeps_its_secrets_from_other_users(node_with_filters):
    home = node_with_filters
    _deliver(home)
    problems = exposed(home.root)
    assert not problems, "\n".join(problems + ["", "listing:"]
                                   + [str(e) for e in listing(home.root)])
    # the supervisor's own output for our services is in root's directory, not the mail owner's
    assert (home.log_dir / "supervisord" / "smtp.log").exists()
    assert not (home.log_dir / "smtp" / "daemon.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the sockets' group is the mail owner's as root")
def test_the_filter_daemons_listen_on_sockets_of_the_mail_owners_group(node_with_filters):
    home = node_with_filters
    sock = spamd.socket_path(home).stat()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o660
    assert grp.getgrgid(sock.st_gid).gr_name == "mailyard"
    directory = clamd.socket_dir(home).stat()
    assert stat.S_IMODE(directory.st_mode) == 0o750
    assert grp.getgrgid(directory.st_gid).gr_name == "mailyard"
    assert Path(clamd.socket_path(home)).exists()
    # `up` returned: wait_ready saw both daemons' processes holding their sockets
    states = {s.name: s.state for s in control.status(home, with_versions=False)}
    assert states["spamd"] == states["clamd"] == "RUNNING"

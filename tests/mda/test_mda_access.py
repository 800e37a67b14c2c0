"""Mailbox access with real clients: imaplib, poplib and mbsync against the node's Dovecot.

One Dovecot serves the whole module (started as the supervisor starts it). Mail is placed in
the Maildirs as a delivery agent writes it; the end-to-end path through the SMTP service and
`send` belongs to the integration tests.
"""

from __future__ import annotations

import imaplib
import poplib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mda_support import (
    DOMAIN,
    IMAP,
    IMAPS,
    PASSWORD,
    POP3,
    POP3S,
    RunningDovecot,
    make_node,
    place_message,
    short_tmp,
    start_dovecot,
    stop_dovecot,
    tls_context,
)
from sqlalchemy import update

from mailyard.mailboxes import STANDARD_FOLDERS, TRAINING_FOLDERS
from mailyard.store.accounts import add_mailbox, remove_mailbox, set_password
from mailyard.store.db import session_scope
from mailyard.store.models import Mailbox

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


@pytest.fixture(scope="module")
def node() -> Iterator[RunningDovecot]:
    root = short_tmp("mda-access")
    home = make_node(root, users=("alice", "bob", "carol", "dave", "erin", "frank"))
    running = start_dovecot(home)
    yield running
    stop_dovecot(running)
    shutil.rmtree(root, ignore_errors=True)


def _folder_names(listing: list[bytes]) -> set[str]:
    names = set()
    for line in listing:
        name = line.decode().rsplit(' "." ', 1)[1]
        names.add(name.strip('"'))
    return names


def test_imap_with_starttls_lists_the_folders_and_fetches_a_delivered_message(node):
    place_message(node.home, ALICE, "first over STARTTLS")
    client = IMAP(node.port("imap"))
    assert "STARTTLS" in client.capabilities
    client.starttls(ssl_context=tls_context(node.home))
    client.login(ALICE, PASSWORD)
    status, listing = client.list()
    assert status == "OK"
    assert _folder_names(listing) == {"INBOX", *STANDARD_FOLDERS, *TRAINING_FOLDERS}
    status, subscribed = client.lsub()
    assert _folder_names(subscribed) >= {*STANDARD_FOLDERS, *TRAINING_FOLDERS}
    status, data = client.select("INBOX")
    assert status == "OK" and int(data[0]) >= 1
    status, found = client.search(None, "SUBJECT", '"first over STARTTLS"')
    (number,) = found[0].split()
    status, fetched = client.fetch(number, "(RFC822)")
    assert b"Subject: first over STARTTLS" in fetched[0][1]
    assert b"Hello from the tests." in fetched[0][1]
    client.logout()


def test_imaps_sets_flags_moves_to_learn_spam_and_deletes(node):
    maildir = node.home.maildir(ALICE)
    place_message(node.home, ALICE, "please learn me as spam")
    client = IMAPS(node.port("imaps"), tls_context(node.home))
    client.login(ALICE, PASSWORD)
    client.select("INBOX")
    _, found = client.uid("SEARCH", None, "SUBJECT", '"please learn me as spam"')
    (uid,) = found[0].split()
    assert client.uid("STORE", uid, "+FLAGS", r"(\Flagged \Seen)")[0] == "OK"
    _, flags = client.uid("FETCH", uid, "(FLAGS)")
    assert b"\\Flagged" in flags[0] and b"\\Seen" in flags[0]

    assert client.uid("MOVE", uid, '"Learn Spam"')[0] == "OK"
    # The training job reads the folder from disk: the message must be there, in Maildir++.
    learn = list((maildir / ".Learn Spam" / "cur").iterdir())
    assert any(b"please learn me as spam" in p.read_bytes() for p in learn)
    _, found = client.uid("SEARCH", None, "SUBJECT", '"please learn me as spam"')
    assert found[0] == b""

    client.select('"Learn Spam"')
    _, found = client.search(None, "SUBJECT", '"please learn me as spam"')
    (number,) = found[0].split()
    client.store(number, "+FLAGS", r"(\Deleted)")
    client.expunge()
    assert not any(b"please learn me as spam" in p.read_bytes()
                   for p in (maildir / ".Learn Spam" / "cur").iterdir())
    client.logout()


def test_pop3_with_stls_retrieves_and_deletes(node):
    path = place_message(node.home, BOB, "for pop3 with STLS")
    client = POP3(node.port("pop3"))
    assert "STLS" in client.capa()
    client.stls(context=tls_context(node.home))
    client.user(BOB)
    assert client.pass_(PASSWORD).startswith(b"+OK")
    count, _ = client.stat()
    assert count >= 1
    subjects = {}
    for n in range(1, count + 1):
        _, lines, _ = client.retr(n)
        subjects[n] = next(x for x in lines if x.startswith(b"Subject:"))
    (number,) = [n for n, s in subjects.items() if s == b"Subject: for pop3 with STLS"]
    client.dele(number)
    client.quit()
    remaining = [p.read_bytes() for sub in ("new", "cur") for p in (path.parent.parent / sub)
                 .iterdir()]
    assert not any(b"for pop3 with STLS" in data for data in remaining)


def test_pop3s_retrieves_a_message(node):
    place_message(node.home, BOB, "for pop3s")
    client = POP3S(node.port("pop3s"), tls_context(node.home))
    client.user(BOB)
    client.pass_(PASSWORD)
    count, _ = client.stat()
    bodies = [b"\n".join(client.retr(n)[1]) for n in range(1, count + 1)]
    assert any(b"Subject: for pop3s" in body for body in bodies)
    client.quit()


def test_plain_login_from_a_plaintext_network_needs_no_tls(node):
    # 127.0.0.0/8 is in mda.plaintext_networks by default; a client on another loopback
    # address is not "local" to Dovecot, so only that setting lets it in without TLS.
    client = IMAP(node.port("imap"), source="127.0.0.9")
    assert "LOGINDISABLED" not in client.capabilities
    assert client.login(ALICE, PASSWORD)[0] == "OK"
    client.logout()
    pop = POP3(node.port("pop3"), source="127.0.0.9")
    pop.user(BOB)
    assert pop.pass_(PASSWORD).startswith(b"+OK")
    pop.quit()


def test_wrong_password_is_refused_after_a_delay(node):
    # Each failing test uses an address of its own: Dovecot's penalty for failures from one
    # address would otherwise slow down the tests that follow.
    client = IMAP(node.port("imap"), source="127.0.0.21")
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(ALICE, "not the password")
    # auth_failure_delay is 2 s; Dovecot answers failures on whole-second ticks, so the answer
    # never comes sooner than 1 s after the attempt (a lower bound: load cannot break it).
    assert time.monotonic() - started >= 1.0
    client.logout()
    pop = POP3S(node.port("pop3s"), tls_context(node.home), source="127.0.0.22")
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto, match="ERR"):
        pop.pass_("not the password")


def test_removed_mailbox_can_no_longer_log_in(node):
    carol = f"carol@{DOMAIN}"
    client = IMAPS(node.port("imaps"), tls_context(node.home))
    assert client.login(carol, PASSWORD)[0] == "OK"
    client.logout()
    remove_mailbox(node.home, carol)
    client = IMAPS(node.port("imaps"), tls_context(node.home), source="127.0.0.23")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(carol, PASSWORD)


def test_deactivated_mailbox_cannot_log_in(node):
    dave = f"dave@{DOMAIN}"
    with session_scope(node.home.db_url) as s:
        s.execute(update(Mailbox).where(Mailbox.address == dave).values(active=False))
    client = IMAP(node.port("imap"), source="127.0.0.24")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(dave, PASSWORD)


def test_password_change_counts_at_the_next_login(node):
    erin = f"erin@{DOMAIN}"
    set_password(node.home, erin, "a brand new secret")
    client = IMAP(node.port("imap"), source="127.0.0.25")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(erin, PASSWORD)
    client = IMAP(node.port("imap"))
    assert client.login(erin, "a brand new secret")[0] == "OK"
    client.logout()


def test_mailbox_added_while_running_can_log_in_with_mixed_case_name(node):
    add_mailbox(node.home, f"grace@{DOMAIN}", PASSWORD)
    client = IMAPS(node.port("imaps"), tls_context(node.home))
    assert client.login(f"Grace@{DOMAIN.upper()}", PASSWORD)[0] == "OK"
    _, listing = client.list()
    assert "Learn Ham" in _folder_names(listing)
    client.logout()


def test_mbsync_syncs_a_mailbox_over_imaps(node, tmp_path: Path):
    frank = f"frank@{DOMAIN}"
    place_message(node.home, frank, "synced to the laptop")
    place_message(node.home, frank, "a sent one", folder="Sent")
    local = tmp_path / "laptop"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        "IMAPAccount node\n"
        "Host localhost\n"  # the certificate names localhost; mbsync checks the name
        f"Port {node.port('imaps')}\n"
        f"User {frank}\n"
        f'Pass "{PASSWORD}"\n'
        "SSLType IMAPS\n"
        f"CertificateFile {node.home.cert_file}\n"
        "\n"
        "IMAPStore node-remote\n"
        "Account node\n"
        "\n"
        "MaildirStore laptop-local\n"
        f"Path {local}/\n"
        f"Inbox {local}/INBOX\n"
        "SubFolders Verbatim\n"
        "\n"
        "Channel node\n"
        "Far :node-remote:\n"
        "Near :laptop-local:\n"
        "Patterns *\n"
        "Create Near\n"
        "SyncState *\n"
    )
    done = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    inbox = [p.read_bytes() for p in (local / "INBOX" / "new").iterdir()]
    inbox += [p.read_bytes() for p in (local / "INBOX" / "cur").iterdir()]
    assert any(b"Subject: synced to the laptop" in m for m in inbox)
    sent = [p.read_bytes() for sub in ("new", "cur") for p in (local / "Sent" / sub).iterdir()]
    assert any(b"Subject: a sent one" in m for m in sent)
    assert (local / "Learn Spam").is_dir()


def test_listens_on_every_address_ipv6_too_when_the_machine_has_it(node):
    from mailyard.mda.config import conf_path
    from mailyard.mda.dovecot import ipv6_available

    text = conf_path(node.home).read_text()
    if ipv6_available():
        assert "listen = *, ::\n" in text
        client = IMAPS(node.port("imaps"), tls_context(node.home), host="::1")
        assert client.login(ALICE, PASSWORD)[0] == "OK"
        client.logout()
    else:
        assert "listen = *\n" in text
    # 127.0.0.1 is not the only IPv4 address served: "*" covers the whole loopback network.
    client = IMAP(node.port("imap"), host="127.0.0.2", source="127.0.0.2")
    assert client.login(BOB, PASSWORD)[0] == "OK"
    client.logout()

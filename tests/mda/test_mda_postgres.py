"""Dovecot on a node whose store is PostgreSQL (dovecot-pgsql), as nodes of a cluster run."""

from __future__ import annotations

import imaplib
import poplib
import shutil

import pytest
from mda_support import (
    DOMAIN,
    IMAPS,
    PASSWORD,
    POP3,
    make_node,
    place_message,
    short_tmp,
    start_dovecot,
    stop_dovecot,
    tls_context,
)

from mailyard.mda.config import paths
from mailyard.store.accounts import remove_mailbox, set_password


def test_logins_read_the_postgresql_store_directly(pg_url):
    # A password with characters that need quoting on both levels (libpq and Dovecot's
    # parser) in the URL: the test server trusts loopback, so it only proves the connect
    # string survives the trip; a mangled one would make every login fail.
    url = pg_url.replace("postgresql://mailyard@",
                         "postgresql://mailyard:we%27ird%20%23pw%5C@")
    root = short_tmp("mda-pg")
    home = make_node(root, users=("alice", "bob"), db_url=url)
    node = start_dovecot(home)
    try:
        assert "driver = pgsql\n" in paths(home).sql_conf.read_text()
        place_message(home, f"alice@{DOMAIN}", "stored in postgres land")
        client = IMAPS(node.port("imaps"), tls_context(home))
        client.login(f"alice@{DOMAIN}", PASSWORD)
        client.select()
        _, found = client.search(None, "SUBJECT", '"stored in postgres land"')
        assert len(found[0].split()) == 1
        client.logout()

        set_password(home, f"alice@{DOMAIN}", "changed in postgres")
        client = IMAPS(node.port("imaps"), tls_context(home), source="127.0.0.31")
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(f"alice@{DOMAIN}", PASSWORD)
        client = IMAPS(node.port("imaps"), tls_context(home))
        assert client.login(f"alice@{DOMAIN}", "changed in postgres")[0] == "OK"
        client.logout()

        remove_mailbox(home, f"bob@{DOMAIN}")
        pop = POP3(node.port("pop3"), source="127.0.0.32")
        pop.user(f"bob@{DOMAIN}")
        with pytest.raises(poplib.error_proto, match="ERR"):
            pop.pass_(PASSWORD)
    finally:
        stop_dovecot(node)
        shutil.rmtree(root, ignore_errors=True)

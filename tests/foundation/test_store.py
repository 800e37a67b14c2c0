"""The store behaves the same on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.nodeinit import init_home
from mailyard.settings.types import SettingError
from mailyard.store import accounts
from mailyard.store.db import session_scope
from mailyard.store.migrate import migrate
from mailyard.store.models import Mailbox
from mailyard.store.settings_store import load_settings, set_many, set_setting


@pytest.fixture(params=["sqlite", "postgresql"])
def store_home(request, tmp_path: Path):
    db_url = None
    if request.param == "postgresql":
        db_url = request.getfixturevalue("pg_url")
    home, password = init_home(tmp_path / "node", "mx.example.test", port_base=0, db_url=db_url)
    assert password and len(password) >= 16
    return home


def test_sqlite_store_runs_in_wal_mode(home):
    with session_scope(home.db_url) as s:
        mode = s.connection().exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"


def test_migrations_are_idempotent(store_home):
    migrate(store_home.db_url)
    migrate(store_home.db_url)
    assert accounts.list_domains(store_home) == []


def test_domains_mailboxes_and_aliases_round_trip(store_home):
    h = store_home
    accounts.add_domain(h, "Example.COM", owner="webuser")
    assert accounts.list_domains(h) == [{"name": "example.com", "owner": "webuser",
                                         "mailboxes": 0}]
    assert accounts.add_mailbox(h, "Fred@Example.com", "s3cret pass") == "fred@example.com"
    assert accounts.check_mailbox_password(h, "FRED@example.com", "s3cret pass")
    assert not accounts.check_mailbox_password(h, "fred@example.com", "wrong")
    accounts.set_password(h, "fred@example.com", "new one")
    assert accounts.check_mailbox_password(h, "fred@example.com", "new one")
    assert not accounts.check_mailbox_password(h, "fred@example.com", "s3cret pass")
    accounts.add_alias(h, "sales@example.com", ["fred@example.com", "boss@other.org"])
    assert accounts.get_alias(h, "SALES@example.com").targets == ["fred@example.com",
                                                                  "boss@other.org"]
    assert accounts.domains_owned_by(h, "webuser") == ["example.com"]
    assert accounts.domains_owned_by(h, "nobody") == []
    assert accounts.is_local_domain(h, "EXAMPLE.com")
    accounts.remove_mailbox(h, "fred@example.com")
    assert not accounts.check_mailbox_password(h, "fred@example.com", "new one")
    accounts.remove_domain(h, "example.com")
    assert accounts.list_aliases(h) == []


def test_password_hashes_are_argon2id_in_dovecot_form(store_home):
    accounts.add_domain(store_home, "example.com")
    accounts.add_mailbox(store_home, "a@example.com", "pw")
    with session_scope(store_home.db_url) as s:
        stored = s.query(Mailbox.password_hash).scalar()
    assert stored.startswith("{ARGON2ID}$argon2id$")


@pytest.mark.parametrize("bad", ["no-at-sign", "two@@example.com", "a@-bad-.com", "a b@example.com",
                                 "a/b@example.com",
                                 "x@example.com\r\nRCPT TO:<evil@x>"])
def test_bad_addresses_are_refused(store_home, bad):
    accounts.add_domain(store_home, "example.com")
    with pytest.raises(accounts.AccountError):
        accounts.add_mailbox(store_home, bad, "pw")


def test_mailbox_needs_its_domain_and_duplicates_are_refused(store_home):
    with pytest.raises(accounts.AccountError, match="not a domain of this node"):
        accounts.add_mailbox(store_home, "a@nowhere.test", "pw")
    accounts.add_domain(store_home, "example.com")
    accounts.add_mailbox(store_home, "a@example.com", "pw")
    with pytest.raises(accounts.AccountError, match="exists already"):
        accounts.add_mailbox(store_home, "A@example.com", "pw")
    with pytest.raises(accounts.AccountError, match="exists already"):
        accounts.add_domain(store_home, "example.com")


def test_settings_are_validated_and_stored_all_or_nothing(store_home):
    h = store_home
    assert load_settings(h)["smtp.timeout"] == 1200
    set_setting(h, "smtp.timeout", "600")
    assert load_settings(h)["smtp.timeout"] == 600
    with pytest.raises(SettingError) as err:
        set_many(h, {"smtp.greeting": "hello", "smtp.max_connections": "lots"})
    assert err.value.key == "smtp.max_connections"
    values = load_settings(h)
    assert values["smtp.greeting"] == ""  # the good value of the refused batch was not stored
    assert values["server.hostname"] == "mx.example.test"


def test_a_node_override_wins_over_the_cluster_value(store_home):
    h = store_home
    set_setting(h, "smtp.greeting", "cluster wide")
    set_setting(h, "smtp.greeting", "this node", node_only=True)
    assert load_settings(h)["smtp.greeting"] == "this node"
    set_setting(h, "smtp.greeting", "cluster again")
    assert load_settings(h)["smtp.greeting"] == "cluster again"


def test_alias_update_is_one_change_and_a_bad_target_changes_nothing(store_home):
    accounts.add_domain(store_home, "example.com")
    accounts.add_alias(store_home, "info@example.com", ["a@example.com"])
    accounts.update_alias(store_home, "info@example.com", ["b@example.com", "c@other.org"],
                          keep_copy=True)
    alias = accounts.get_alias(store_home, "info@example.com")
    assert alias.targets == ["b@example.com", "c@other.org"] and alias.keep_copy
    with pytest.raises(accounts.AccountError):
        accounts.update_alias(store_home, "info@example.com", ["not an address"])
    assert accounts.get_alias(store_home, "info@example.com").targets == ["b@example.com",
                                                                         "c@other.org"]


def test_an_inactive_mailbox_cannot_authenticate(store_home):
    accounts.add_domain(store_home, "example.com", owner="u1")
    accounts.add_mailbox(store_home, "a@example.com", "pw")
    accounts.set_mailbox_active(store_home, "a@example.com", False)
    assert not accounts.check_mailbox_password(store_home, "a@example.com", "pw")
    accounts.set_domain_owner(store_home, "example.com", "u2")
    assert accounts.domains_owned_by(store_home, "u2") == ["example.com"]


def test_a_second_node_on_a_shared_store_keeps_its_own_hostname(pg_url, tmp_path):
    from mailyard.store.settings_store import load_settings

    first, _ = init_home(tmp_path / "a", "mx1.example.test", db_url=pg_url, node_name="a")
    second, _ = init_home(tmp_path / "b", "mx2.example.test", db_url=pg_url, node_name="b")
    assert load_settings(first)["server.hostname"] == "mx1.example.test"
    assert load_settings(second)["server.hostname"] == "mx2.example.test"
    assert load_settings(second)["server.default_domain"] == "mx1.example.test"

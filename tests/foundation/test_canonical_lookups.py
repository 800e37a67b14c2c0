"""The store looks addresses up in their canonical form only (issue 16 item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.filters.prefs import PreferenceError, normalise_scope
from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting


@pytest.fixture
def home(tmp_path: Path) -> Home:
    made, _ = init_home(tmp_path / "node", "mx.example.test", port_base=0)
    accounts.add_domain(made, "example.org")
    accounts.add_mailbox(made, "joe@example.org", "joe's password 1")
    accounts.add_alias(made, "sales@example.org", ["joe@example.org"])
    yield made
    dispose_all()


def test_lookups_find_canonical_spellings_and_never_trim(home: Home) -> None:
    for found in ("joe@example.org", "Joe@EXAMPLE.org", '"joe"@example.org'):
        assert accounts.get_mailbox(home, found) is not None, found
        assert accounts.check_mailbox_password(home, found, "joe's password 1"), found
    for phantom in (" joe@example.org", "joe@example.org ", '" joe"@example.org',
                    '"joe "@example.org', "joe@example.org\n"):
        assert accounts.get_mailbox(home, phantom) is None, phantom
        assert not accounts.check_mailbox_password(home, phantom, "joe's password 1"), phantom
    assert accounts.get_alias(home, '"sales"@example.org') is not None
    assert accounts.get_alias(home, " sales@example.org") is None


def test_local_domains_include_the_hostname_and_default_domain(home: Home) -> None:
    assert accounts.local_domains(home) == {"example.org", "mx.example.test"}
    set_setting(home, "server.default_domain", "Mail.Example.NET")
    assert accounts.local_domains(home) == {"example.org", "mx.example.test",
                                            "mail.example.net"}


def test_sender_facts(home: Home) -> None:
    accounts.set_domain_owner(home, "example.org", "webuser")
    accounts.add_domain(home, "example.net", owner="webuser")
    accounts.add_domain(home, "example.com", owner="other")
    accounts.add_domain(home, "example.info")
    joe = "joe@example.org"
    assert accounts.sender_facts(home, joe, "sales@example.org") == (True, True)
    assert accounts.sender_facts(home, joe, "x@example.net") == (False, True)
    assert accounts.sender_facts(home, joe, "x@example.com") == (False, False)
    assert accounts.sender_facts(home, joe, "x@far.test") == (False, False)
    accounts.set_domain_owner(home, "example.org", "")
    # No owner is nobody's: two unowned domains are not "the same owner".
    assert accounts.sender_facts(home, joe, "x@example.info") == (False, False)


def test_spam_preference_scopes_use_the_store_grammar() -> None:
    assert normalise_scope("mailbox:Joe@Example.org") == "mailbox:joe@example.org"
    for bad in ("mailbox:../..@example.org", "mailbox:a/b@example.org",
                'mailbox:" joe"@example.org', "mailbox:.joe@example.org"):
        with pytest.raises(PreferenceError):
            normalise_scope(bad)

"""The in-process view of the store that SMTP answers recipient questions from."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.smtp.directory import Directory
from mailyard.store import accounts
from mailyard.store.view import NEGATIVE_MAX_AGE, POSITIVE_MAX_AGE, StoreView

REPO = Path(__file__).resolve().parents[2]


def add_mailbox_elsewhere(home: Home, address: str) -> None:
    """Another process (as the panel or the CLI would) creates a mailbox."""
    code = ("from mailyard.home import Home; from mailyard.store.accounts import add_mailbox; "
            f"add_mailbox(Home.find({str(home.root)!r}), {address!r}, 'a long password 1')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_a_mailbox_created_by_another_process_is_found_at_once(home: Home) -> None:
    accounts.add_domain(home, "example.org")
    directory = Directory(home)

    async def ask(address: str) -> tuple[bool, bool]:
        return (await directory.recipient_facts("example.org", address))[:2]

    assert asyncio.run(ask("new@example.org")) == (True, False)
    add_mailbox_elsewhere(home, "new@example.org")
    assert asyncio.run(ask("new@example.org")) == (True, True)  # no waiting, no TTL
    assert asyncio.run(ask("NEW@Example.ORG")) == (True, True)


def test_the_view_is_read_again_only_when_the_store_changed(home: Home) -> None:
    accounts.add_domain(home, "example.org")
    view = StoreView(home)
    assert view.exact
    view.refresh()
    assert not view.stale() and not view.stale(negative=True)
    for _ in range(50):
        assert not view.stale()
    assert view.rebuilds == 1
    accounts.add_mailbox(home, "joe@example.org", "a long password 1")
    assert view.stale()
    assert view.refresh().recipient("joe@example.org").exists
    assert not view.stale()


def test_the_view_carries_what_policy_needs(home: Home) -> None:
    accounts.add_domain(home, "example.org", owner="hosting1")
    accounts.add_domain(home, "example.net", owner="hosting1")
    accounts.add_mailbox(home, "joe@example.org", "a long password 1")
    accounts.add_mailbox(home, "ann@example.org", "a long password 2")
    accounts.set_mailbox_active(home, "ann@example.org", False)
    accounts.add_alias(home, "sales@example.org", ["joe@example.org", "x@remote.test"])
    snap = StoreView(home).refresh()
    joe = snap.recipient("joe@example.org")
    assert joe.domain_local and joe.mailbox and joe.mailbox.active
    assert joe.domain_owner == "hosting1"
    ann = snap.recipient("ann@example.org")
    assert ann.exists and ann.mailbox and not ann.mailbox.active
    sales = snap.recipient("sales@example.org")
    assert sales.alias and sales.alias.targets == ("joe@example.org", "x@remote.test")
    assert snap.aliases_to["joe@example.org"] == ("sales@example.org",)
    assert snap.owners["hosting1"] == ("example.net", "example.org")
    other = snap.recipient("joe@remote.test")
    assert not other.domain_local and not other.exists


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pg_home(pg_url: str, tmp_path: Path) -> Home:
    home, _ = init_home(tmp_path / "node", "mx.example.test", port_base=0, db_url=pg_url)
    return home


def test_on_postgresql_a_no_is_asked_again_after_a_second(pg_home: Home) -> None:
    home = pg_home
    accounts.add_domain(home, "example.org")
    clock = FakeClock()
    directory = Directory(home, StoreView(home, clock=clock))
    assert not directory.view.exact

    async def ask() -> tuple[bool, bool]:
        return (await directory.recipient_facts("example.org", "new@example.org"))[:2]

    assert asyncio.run(ask()) == (True, False)
    accounts.add_mailbox(home, "new@example.org", "a long password 1")
    assert asyncio.run(ask()) == (True, False)  # the view is younger than a second
    clock.now += NEGATIVE_MAX_AGE + 0.01
    assert asyncio.run(ask()) == (True, True)
    # a yes is kept longer; a deleted mailbox is noticed once that has passed
    rebuilds = directory.view.rebuilds
    accounts.remove_mailbox(home, "new@example.org")
    clock.now += NEGATIVE_MAX_AGE + 0.01
    assert asyncio.run(ask()) == (True, True)
    assert directory.view.rebuilds == rebuilds
    clock.now += POSITIVE_MAX_AGE
    assert asyncio.run(ask()) == (True, False)

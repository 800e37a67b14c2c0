"""Fixtures that run a whole node under supervision, as `mailyard up` does."""

from __future__ import annotations

import pytest

from mailyard.home import Home
from mailyard.services import control
from mailyard.store import accounts
from mailyard.store.settings_store import set_many

# The services a test node starts; the heavy filters only where a test asks for them.
LIGHT = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps")
ALL_SERVICES = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd",
                "clamd", "freshclam", "panel")


def only_services(home: Home, wanted: tuple[str, ...]) -> None:
    set_many(home, {f"service.{name}.start_on_boot": name in wanted for name in ALL_SERVICES})


@pytest.fixture
def running_node(home: Home):
    """A node with example.test and two mailboxes, its light services up; stopped afterwards."""
    accounts.add_domain(home, "example.test", owner="web1")
    accounts.add_mailbox(home, "ann@example.test", "ann password")
    accounts.add_mailbox(home, "bob@example.test", "bob password")
    only_services(home, LIGHT)
    try:
        control.up(home, timeout=90)
        yield home
    finally:
        control.down(home)

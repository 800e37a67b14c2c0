"""Fixtures that start the real smtp and submission services on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from smtp_helpers import JOE, JOE_PASSWORD, Service, give_store_to_mail_owner, start_service

from mailyard.home import Home
from mailyard.store.accounts import add_domain, add_mailbox
from mailyard.store.db import dispose_all


@pytest.fixture
def node(home: Home) -> Home:
    """A home with the local domain example.org and the mailbox joe@example.org."""
    add_domain(home, "example.org")
    add_mailbox(home, JOE, JOE_PASSWORD)
    dispose_all()
    give_store_to_mail_owner(home)
    return home


@pytest.fixture
def start(node: Home) -> Iterator:
    started: list[Service] = []

    def _start(name: str = "smtp", home: Home | None = None) -> Service:
        service = start_service(home or node, name)
        started.append(service)
        return service

    yield _start
    for service in started:
        service.stop()


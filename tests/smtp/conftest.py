"""Fixtures that start the real smtp and submission services on free loopback ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_helpers import (
    JOE,
    JOE_PASSWORD,
    Service,
    free_port_base,
    give_store_to_mail_owner,
    start_service,
)

from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.store.accounts import add_domain, add_mailbox
from mailyard.store.db import dispose_all


@pytest.fixture
def node() -> Iterator[Home]:
    """A home with the local domain example.org and the mailbox joe@example.org.

    It lives in its own directory under /tmp rather than in pytest's tmp_path: the services
    drop root for the `mailyard` user, which must reach the home, and pytest resets its own
    base directory to 0700 whenever another pytest run starts on the machine."""
    root = Path(tempfile.mkdtemp(prefix="mailyard-smtp-test-"))
    os.chmod(root, 0o755)
    home, _ = init_home(root / "node", "mx.example.test", port_base=free_port_base())
    add_domain(home, "example.org")
    add_mailbox(home, JOE, JOE_PASSWORD)
    dispose_all()
    give_store_to_mail_owner(home)
    yield home
    dispose_all()
    shutil.rmtree(root, ignore_errors=True)


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


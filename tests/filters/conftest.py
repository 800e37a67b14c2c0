"""Real spamd and clamd for the filter tests: one of each per test module, on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.filters.helpers import Clamd, Spamd, reachable_home

from mailyard.home import Home


@pytest.fixture(scope="module")
def module_home() -> Iterator[Home]:
    """One node home shared by a test module (and its daemons)."""
    with reachable_home() as home:
        yield home


@pytest.fixture
def own_home() -> Iterator[Home]:
    """A node home of one test's own, for daemons the test starts and stops itself."""
    with reachable_home() as home:
        yield home


@pytest.fixture(scope="module")
def spamd_server(module_home: Home) -> Iterator[Spamd]:
    daemon = Spamd(module_home)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def clamd_server(module_home: Home) -> Iterator[Clamd]:
    daemon = Clamd(module_home)
    daemon.start()
    yield daemon
    daemon.stop()

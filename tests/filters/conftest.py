"""Real spamd and clamd for the filter tests: one of each per test module, on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.filters.helpers import Clamd, Spamd, make_home

from mailyard.home import Home


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return make_home(tmp_path_factory.mktemp("filters"))


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

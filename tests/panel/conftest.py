"""Fixtures of the panel's tests: a node home with a running panel (one per module), and one
headless Chromium per module."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from panel_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PanelNode,
    make_home,
    panel_url,
    start_panel,
    stop_process,
)

from mailyard.panel.tokens import create_token
from mailyard.store.db import dispose_all


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelNode]:
    """A node home with the panel running alone (no supervisor), one per test module."""
    home = make_home(tmp_path_factory.mktemp("panel"))
    token = create_token(home, "tests")
    dispose_all()
    started_at = time.time()
    proc = start_panel(home)
    try:
        yield PanelNode(home, panel_url(home), token, proc, int(started_at))
    finally:
        stop_process(proc)
        dispose_all()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright; one per module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()

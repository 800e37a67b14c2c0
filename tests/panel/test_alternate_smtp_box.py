"""The Alternate SMTP Server Settings box in a real browser (Debian's Chromium through
Playwright) on a supervised node: "Cascade to nodes?" cascades what may be cascaded, keeps the
node's own ports on the node and says which were which; a new port is served at once."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from panel_helpers import (
    panel_url,
    screenshot,
    signed_in_tab,
    supervised_node,
)
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select
from tests.waiting import wait_for

from mailyard.home import Home
from mailyard.store.db import session_scope
from mailyard.store.models import SettingRow
from mailyard.store.settings_store import load_settings

ALL = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd", "clamd",
       "freshclam", "panel")
# Generous waits: a node on a loaded two-core machine can be slow; nothing here is a threshold.
WAIT_MS = 60_000
WAIT_S = 60.0

expect.set_options(timeout=WAIT_MS)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def node() -> Iterator[Home]:
    with supervised_node("mailyard-panel-alt-", ("submission", "panel")) as home:
        yield home


@pytest.fixture(scope="module")
def page(browser: Browser, node: Home) -> Iterator[Page]:
    with signed_in_tab(browser, node, "/mta", WAIT_MS) as tab:
        yield tab


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            return sock.makefile("rb").readline().startswith(b"220 ")
    except OSError:
        return False


def rows(home: Home, key: str) -> dict[str, str]:
    """node ('' for the cluster-wide value) -> stored value of one setting."""
    with session_scope(home.db_url) as session:
        return {r.node: r.value for r in session.execute(
            select(SettingRow).where(SettingRow.key == key)).scalars()}


def test_cascading_the_box_keeps_the_ports_on_the_node_and_moves_the_listener(
        page: Page, node: Home) -> None:
    old = node.port("submission")
    assert answers(old)
    new_value = next(v for v in range(2600, 2700)
                     if _free(v + node.port_base) and v + node.port_base != old)
    page.fill("#f-submission-port", str(new_value))
    page.select_option("#f-submission-auth-mode", "auth_withtls/tls_optional")
    page.check("#smtp-alternate input[name=cascade]")
    page.click("#smtp-alternate button.update")
    flash = page.locator("#flash")
    expect(flash).to_contain_text("Saved.")
    expect(flash).to_contain_text("Cascaded to every node: Authentication Mode")
    expect(flash).to_contain_text(
        "Kept on this node only (each node has its own): Alternate SMTP Port, SMTPS Port.")
    expect(flash).to_contain_text("Restarted to take effect: submission.")
    screenshot(page, "alternate-smtp-cascaded")

    settings = load_settings(node)
    assert settings["submission.port"] == new_value
    assert settings["submission.auth_mode"] == "auth_withtls/tls_optional"
    assert rows(node, "submission.port") == {node.node_name: str(new_value)}
    assert rows(node, "submission.auth_mode") == {"": "auth_withtls/tls_optional"}
    wait_for(lambda: answers(new_value + node.port_base), "the new alternate port")
    assert not answers(old)
    expect(page.locator("#f-submission-port")).to_have_value(str(new_value))


def test_the_box_without_cascade_is_this_nodes_and_restarts_nothing_unchanged(
        page: Page, node: Home) -> None:
    page.goto(panel_url(node) + "/mta")
    page.select_option("#f-submission-auth-mode", "auth_required/tls_required")
    page.click("#smtp-alternate button.update")
    expect(page.locator("#flash")).to_have_text("Saved.")  # no port changed: no restart
    assert rows(node, "submission.auth_mode")[node.node_name] == "auth_required/tls_required"

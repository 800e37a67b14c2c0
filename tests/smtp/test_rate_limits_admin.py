"""Administering the outbound rate limits: a mailbox's own limit (CLI and API), `mailyard
limits`, and the panel's warning about a sender over its limit, in Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from tests.panel.panel_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    CHROMIUM,
    CHROMIUM_ARGS,
    PanelNode,
    make_home,
    panel_url,
    start_panel,
    stop_process,
)

from mailyard.panel.tokens import create_token
from mailyard.smtp import ratelimit as RL
from mailyard.smtp.ratetable import RateTable
from mailyard.store import accounts
from mailyard.store.db import dispose_all

MAILYARD = str(Path(sys.executable).parent / "mailyard")
BOX = "joe@example.test"


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelNode]:
    home = make_home(tmp_path_factory.mktemp("limits"))
    accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, BOX, "a long enough password")
    token = create_token(home, "tests")
    dispose_all()
    proc = start_panel(home)
    try:
        yield PanelNode(home, panel_url(home), token, proc, int(time.time()))
    finally:
        stop_process(proc)
        dispose_all()


def cli(home: object, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILYARD_HOME=str(home.root))  # type: ignore[attr-defined]
    return subprocess.run([MAILYARD, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_cli_sets_and_clears_a_mailboxs_own_limit(panel: PanelNode) -> None:
    done = cli(panel.home, "mailbox", "set", BOX, "--messages-per-hour", "25")
    assert done.returncode == 0, done.stderr
    assert "messages_per_hour=25" in done.stdout
    assert accounts.mailbox_rate_limit(panel.home, BOX) == 25
    for bad in ("-5", "lots", "1.5"):
        refused = cli(panel.home, "mailbox", "set", BOX, "--messages-per-hour", bad)
        assert refused.returncode == 2
        assert f"--messages-per-hour {bad!r}" in refused.stderr
        assert "from 0 (no limit)" in refused.stderr and "default" in refused.stderr
    assert accounts.mailbox_rate_limit(panel.home, BOX) == 25  # nothing half-changed
    assert cli(panel.home, "mailbox", "set", BOX, "--messages-per-hour", "0").returncode == 0
    assert accounts.mailbox_rate_limit(panel.home, BOX) == 0
    done = cli(panel.home, "mailbox", "set", BOX, "--messages-per-hour", "default")
    assert done.returncode == 0 and "default (limits.messages_per_hour)" in done.stdout
    assert accounts.mailbox_rate_limit(panel.home, BOX) is None
    assert cli(panel.home, "mailbox", "set", BOX, "--messages-per-hour", "-1").returncode == 0


def test_the_api_shows_and_changes_it(panel: PanelNode) -> None:
    with panel.api() as api:
        url = f"/api/v1/mailboxes/{BOX}"
        assert api.get(url).json()["messages_per_hour"] is None
        changed = api.patch(url, json={"messages_per_hour": 40})
        assert changed.status_code == 200 and changed.json()["messages_per_hour"] == 40
        assert api.patch(url, json={"spam_action": "inbox"}).json()["messages_per_hour"] == 40
        refused = api.patch(url, json={"messages_per_hour": -2})
        assert refused.status_code == 422 and refused.json()["field"] == "messages_per_hour"
        listed = {m["address"]: m for m in api.get("/api/v1/mailboxes").json()}
        assert listed[BOX]["messages_per_hour"] == 40
        assert api.patch(url, json={"messages_per_hour": None}).json()["messages_per_hour"] \
            is None


def test_mailyard_limits_and_the_panel_warn_of_a_sender_over_its_limit(panel: PanelNode) -> None:
    limits = RL.Limits(messages_per_hour=1, recipients_per_hour=0, domain_messages_per_hour=0)
    with RateTable(panel.home) as table:
        assert table.charge(limits, RL.uid_sender(33), 2) is None
        assert table.charge(limits, RL.uid_sender(33), 1) is not None  # the second: refused
    shown = cli(panel.home, "limits", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["limits"]["messages_per_hour"] == 300  # the node's setting, not the test's
    [row] = report["senders"]
    assert row["key"] == "uid:33" and row["messages"] == 1 and row["recipients"] == 2
    assert row["refused_rule"] == "messages"
    text = cli(panel.home, "limits")
    assert "uid:33" in text.stdout and "1/300" in text.stdout and "messages at" in text.stdout
    with panel.api() as api:
        assert api.get("/api/v1/limits").json() == report  # the same report, one service

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(panel.url + "/signin?next=/mta")
            page.fill("#username", ADMIN)
            page.fill("#password", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(panel.url + "/mta", timeout=60_000)
            warning = page.locator('[data-problem="rate-limit"]')
            assert warning.count() == 1
            assert "uid:33 passed its limit of 1 messages per hour" in warning.inner_text()
            assert warning.is_visible()
            # the rate limit settings are on the same page, outbound box
            assert page.locator("#f-limits-messages-per-hour").input_value() == "300"
        finally:
            browser.close()

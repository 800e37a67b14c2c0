"""The Delivery Trail page and `GET /api/v1/trail` (issue 19.2) in a real browser: from the
Accounts page's "trail" link to a mailbox's messages and refusals, read from the logs the
node's own log writers wrote (smtp/loglines.py, delivery/sendlog.py through logs.LogDir)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from panel_helpers import ADMIN, ADMIN_PASSWORD, PanelNode, as_mail_owner, screenshot
from playwright.sync_api import Browser, Page, expect

from mailyard.delivery import sendlog as S
from mailyard.home import Home
from mailyard.logs import LogDir
from mailyard.smtp import loglines as L
from mailyard.smtp import replies
from mailyard.store import accounts
from mailyard.store.db import dispose_all

WAIT_MS = 60_000
FILE = "1764000000.M5P6Q7.mx,S=321"


def _write_logs(home: Home) -> None:
    """The lines as the services write them, as the mail owner (log files are 0640)."""
    smtp, send = LogDir(home.log_dir / "smtp"), LogDir(home.log_dir / "send")
    try:
        smtp.write(L.session(L.reject("192.0.2.9", replies.NO_SUCH_USER, "nosuch@example.test",
                                      "ann@example.test"), "9.1"))
        smtp.write(L.session(L.accepted("4242", 321, "someone@example.net",
                                        ["ann@example.test"], "192.0.2.7", "ESMTPS", "", 0, 0,
                                        tls="TLSv1.3", helo="client.example.net",
                                        msgid="m.1@example.net"), "9.2"))
        send.write(S.new_msg("4242"))
        send.write(S.info_msg("4242", 321, "someone@example.net", 55, 107))
        send.write(S.starting_delivery(1, "4242", "local", "ann@example.test"))
        send.write(S.delivery_result(1, "success", f"did 1+0+0\nmaildir INBOX {FILE}"))
        send.write(S.end_msg("4242"))
    finally:
        smtp.close()
        send.close()


@pytest.fixture(scope="module")
def logged(panel: PanelNode) -> PanelNode:
    """ann@example.test with one message delivered and one refused recipient in the logs."""
    home = panel.home
    if "example.test" not in accounts.local_domains(home):
        accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, "ann@example.test", "ann password")
    dispose_all()
    as_mail_owner(lambda: _write_logs(home))
    return panel


@pytest.fixture
def page(browser: Browser, logged: PanelNode) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    tab.goto(logged.url + "/signin?next=/accounts")
    tab.fill("#username", ADMIN)
    tab.fill("#password", ADMIN_PASSWORD)
    tab.click("button[type=submit]")
    expect(tab).to_have_url(logged.url + "/accounts")
    yield tab
    context.close()


def test_the_api_gives_the_trail_and_refuses_a_bad_query(logged: PanelNode) -> None:
    with logged.api() as api:
        found = api.get("/api/v1/trail", params={"q": "<m.1@example.net>"})
        assert found.status_code == 200, found.text
        (m,) = found.json()["messages"]
        assert m["qid"] == 4242 and m["state"] == "delivered"
        assert m["accepted"]["tls"] == "TLSv1.3" and m["attempts"][0]["maildir_file"] == FILE
        bad = api.get("/api/v1/trail", params={"q": "no such thing"})
        assert bad.status_code == 422 and bad.json()["field"] == "q"
        bad = api.get("/api/v1/trail", params={"q": "4242", "since": "3 moons"})
        assert bad.status_code == 422 and bad.json()["field"] == "since"
        # the helper's own check of the text (no NUL) is a refusal of q too, not a failure
        bad = api.get("/api/v1/trail", params={"q": "a\x00b@example.test"})
        assert bad.status_code == 422 and bad.json()["field"] == "q", bad.text
        assert "NUL" in bad.json()["reason"]
    with logged.client() as anonymous:
        assert anonymous.get("/api/v1/trail", params={"q": "4242"}).status_code == 401


def test_from_the_accounts_page_to_a_mailbox_trail(page: Page, logged: PanelNode) -> None:
    row = page.locator('tr[data-mailbox="ann@example.test"]')
    row.get_by_role("link", name="trail").click()
    expect(page).to_have_url(logged.url + "/trail?q=ann%40example.test")
    message = page.locator('article[data-qid="4242"]')
    expect(message).to_have_attribute("data-state", "delivered")
    expect(message).to_contain_text("client.example.net")
    expect(message).to_contain_text("TLSv1.3")
    expect(message).to_contain_text(FILE)
    expect(message.locator('tr[data-result="success"]')).to_contain_text("ann@example.test")
    refusal = page.locator('#trail-refusals tr[data-rule="NO_SUCH_USER"]')
    expect(refusal).to_contain_text("nosuch@example.test")
    expect(refusal).to_contain_text("550 5.1.1")
    screenshot(page, "trail")

    page.fill("#trail-q", "not a query")
    page.get_by_role("button", name="Show Trail").click()
    expect(page.get_by_role("alert")).to_contain_text("is not an address")
    page.fill("#trail-q", "nobody@example.test")
    page.get_by_role("button", name="Show Trail").click()
    expect(page.locator("#trail-messages")).to_contain_text("NO MESSAGES IN THE LOGS")
    expect(page.locator("#trail-refusals")).to_contain_text("NO REFUSALS")

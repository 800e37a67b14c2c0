"""The Mail Authentication page and API (issue 18.5): each domain's records to publish, their
live check against a DNS server on loopback, and DKIM key rotation, in a real browser."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from panel_helpers import ADMIN, ADMIN_PASSWORD, PanelNode, screenshot
from playwright.sync_api import Browser, Page, expect
from tests.dns_support import DnsServer

from mailyard.store import accounts, dkim_keys
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting

WAIT_MS = 60_000


@pytest.fixture
def published(panel: PanelNode, dns_server: DnsServer) -> PanelNode:
    """example.test on the node, its records served by the loopback DNS server."""
    set_setting(panel.home, "smtp.dns_resolver", dns_server.setting)
    if "example.test" not in accounts.local_domains(panel.home):
        accounts.add_domain(panel.home, "example.test")
    dispose_all()
    with panel.api() as api:
        records = api.get("/api/v1/dns/example.test/records")
    assert records.status_code == 200, records.text
    for line in records.json()["zone"].splitlines():
        if line and not line.startswith(";"):
            name, _ttl, _cls, rtype, rdata = line.split(None, 4)
            dns_server.add(name.rstrip("."), rtype, rdata)
    return panel


@pytest.fixture
def page(browser: Browser, panel: PanelNode) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.goto(panel.url + "/signin?next=/mailauth")
    tab.fill("#username", ADMIN)
    tab.fill("#password", ADMIN_PASSWORD)
    tab.click("button[type=submit]")
    expect(tab).to_have_url(panel.url + "/mailauth")
    yield tab
    context.close()


def test_api_gives_records_and_the_check(published: PanelNode) -> None:
    with published.api() as api:
        records = api.get("/api/v1/dns/example.test/records").json()
        kinds = [r["kind"] for r in records["records"]]
        assert kinds[:3] == ["MX", "SPF", "DKIM"] and "DMARC" in kinds
        check = api.get("/api/v1/dns/example.test/check").json()
        assert check["passed"] is True
        assert {f["kind"]: f["state"] for f in check["findings"] if f["required"]} == {
            "MX": "ok", "SPF": "ok", "DKIM": "ok", "DMARC": "ok"}
        assert api.get("/api/v1/dns/nowhere.test/records").status_code == 404


def test_the_page_shows_records_checks_them_and_rotates_keys(published: PanelNode,
                                                             page: Page,
                                                             dns_server: DnsServer) -> None:
    page.goto(published.url + "/mailauth")
    expect(page.locator("h1")).to_have_text("Mail Server Management :: Mail Authentication")
    zone = page.locator('[data-domain="example.test"] pre.zone')
    expect(zone).to_contain_text("._domainkey.example.test. 3600 IN TXT \"v=DKIM1; k=rsa; p=")
    expect(page.locator('[data-field="dns.dmarc_policy"]')).to_be_visible()
    expect(page.locator('[data-certificate="node"]')).to_contain_text("mx.example.test")
    page.click('[data-domain="example.test"] a:has-text("Check DNS")')
    expect(page.locator("[data-check-result]")).to_have_attribute("data-check-result", "passed")
    expect(page.locator('[data-finding="DKIM"][data-state="ok"]')).to_have_count(1)
    screenshot(page, "mailauth-check")
    before = {k.selector for k in dkim_keys.list_keys(published.home, "example.test")}
    page.click('[data-domain="example.test"] button:has-text("Rotate DKIM keys")')
    expect(page.locator(".flash, [role=status]").first).to_contain_text("New DKIM keys",
                                                                       timeout=WAIT_MS)
    after = {k.selector for k in dkim_keys.list_keys(published.home, "example.test")}
    assert before < after  # the old key stays listed, a new one came
    # the new key is not published yet: the check now names it as missing
    page.goto(published.url + "/mailauth?check=example.test")
    expect(page.locator("[data-check-result]")).to_have_attribute("data-check-result", "failed")
    missing = page.locator('[data-finding="DKIM"][data-state="missing"]')
    expect(missing).to_have_count(1)
    assert re.search(r"my\d{8}-?\d*\._domainkey", missing.inner_text())

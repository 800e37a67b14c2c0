"""The Accounts page edits a mailbox's quota and active state and a domain's owner, and shows
how full each mailbox is (issue 19.4): in Debian's Chromium through Playwright, on a running
node whose smtp service then answers accordingly; and the same through the JSON API.

One node per module (smtp and the panel, under supervision as `mailyard up` starts them);
the tests run in order and share one signed-in page."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import httpx
import pytest
from panel_helpers import (
    panel_url,
    screenshot,
    signed_in_tab,
    supervised_node,
)
from playwright.sync_api import Browser, Page, expect

from mailyard import quota
from mailyard.home import Home
from mailyard.panel.tokens import create_token
from mailyard.store import accounts

SERVICES = ("smtp", "panel")
ALL = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd", "clamd",
       "freshclam", "panel")
ANN = "ann@example.test"
# Generous waits: a node on a loaded two-core machine can be slow; nothing here is a threshold.
WAIT_MS = 60_000
USED = 9 * quota.MB + quota.MB // 2  # 9.5 MB of ann's 10 MB
BOB_BYTES = 1234

expect.set_options(timeout=WAIT_MS)


def _accounts(home: Home) -> None:
    accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, ANN, "ann password", quota_mb=10)
    accounts.add_mailbox(home, "bob@example.test", "bob password")
    maildir = home.maildir(ANN)
    quota.write_new(maildir, 10)
    quota.add(maildir, USED)  # as delivery and Dovecot record what they store
    # bob has no quota and so no maildirsize: his message files are counted
    (home.maildir("bob@example.test") / "new" / f"1700000000.M1P1.test,S={BOB_BYTES}"
     ).write_bytes(b"x")


@pytest.fixture(scope="module")
def node() -> Iterator[Home]:
    with supervised_node("mailyard-accounts-", SERVICES, _accounts) as home:
        yield home


@pytest.fixture(scope="module")
def page(browser: Browser, node: Home) -> Iterator[Page]:
    with signed_in_tab(browser, node, "/accounts", WAIT_MS) as tab:
        yield tab


def rcpt(node: Home, address: str) -> tuple[int, str]:
    """What the running smtp service answers to RCPT TO:<address>."""
    with smtplib.SMTP("127.0.0.1", node.port("smtp"), timeout=60) as client:
        client.ehlo("client.outside.test")
        client.mail("sender@outside.test")
        code, text = client.rcpt(address)
        return code, text.decode()


def submit(page: Page, form: str, message: str) -> None:
    """Submit a form and wait until the reloaded page says `message`."""
    page.evaluate("() => { const f = document.getElementById('flash');"
                  " f.hidden = true; f.textContent = ''; }")
    page.click(f"#{form} button.update")
    expect(page.locator("#flash")).to_have_text(message)


def test_the_page_shows_how_full_each_mailbox_is(page: Page, node: Home) -> None:
    row = page.locator(f'tr[data-mailbox="{ANN}"]')
    expect(row.locator("[data-used]")).to_have_text("9.5 MB (95.0 %)")
    expect(row.locator(".bar.high")).to_have_count(1)  # past the warning threshold
    other = page.locator('tr[data-mailbox="bob@example.test"]')
    expect(other.locator("[data-used]")).to_have_text("1.2 KB")  # no quota: counted, no bar
    expect(other.locator(".bar")).to_have_count(0)
    expect(page.locator('tr[data-domain="example.test"] [data-used]')).to_have_text("9.5 MB")
    screenshot(page, "accounts-usage")


def test_a_refused_quota_is_explained_and_changes_nothing(page: Page, node: Home) -> None:
    page.locator(f'tr[data-mailbox="{ANN}"]').get_by_role("button", name="Edit").click()
    expect(page.locator("#me-quota")).to_have_value("10")
    page.fill("#me-quota", "-5")
    page.uncheck("#me-active")
    page.click("#mailbox-edit button.update")
    error = page.locator('#mailbox-edit [data-error-for="quota_mb"]')
    expect(error).to_contain_text(f"from 0 (no limit) to {accounts.MAX_QUOTA_MB}")
    expect(error).to_contain_text("-5")
    assert accounts.get_mailbox(node, ANN) == accounts.MailboxInfo(ANN, True, 10,
                                                                   "spam_folder")


def test_deactivating_a_mailbox_in_the_browser_refuses_its_mail(page: Page, node: Home) -> None:
    assert rcpt(node, ANN)[0] == 250
    page.reload()
    page.locator(f'tr[data-mailbox="{ANN}"]').get_by_role("button", name="Edit").click()
    page.fill("#me-quota", "20")
    page.uncheck("#me-active")
    submit(page, "mailbox-edit", "Mailbox changed.")
    box = accounts.get_mailbox(node, ANN)
    assert box is not None and (box.quota_mb, box.active) == (20, False)
    row = page.locator(f'tr[data-mailbox="{ANN}"]')
    expect(row.locator("[data-used]")).to_have_text("9.5 MB (47.5 %)")
    code, text = rcpt(node, ANN)
    assert code == 550 and "5.2.1" in text, (code, text)


def test_a_quota_lowered_in_the_browser_below_the_usage_refuses_mail(page: Page,
                                                                      node: Home) -> None:
    page.locator(f'tr[data-mailbox="{ANN}"]').get_by_role("button", name="Edit").click()
    expect(page.locator("#me-active")).not_to_be_checked()
    page.fill("#me-quota", "9")
    page.check("#me-active")
    submit(page, "mailbox-edit", "Mailbox changed.")
    box = accounts.get_mailbox(node, ANN)
    assert box is not None and (box.quota_mb, box.active) == (9, True)
    code, text = rcpt(node, ANN)
    assert code == 552 and "5.2.2" in text, (code, text)  # full: 9.5 MB of 9 MB
    screenshot(page, "accounts-edited")


def test_the_owner_of_a_domain_is_changed_in_the_browser(page: Page, node: Home) -> None:
    page.locator('tr[data-domain="example.test"]').get_by_role("button", name="Owner").click()
    page.fill("#de-owner", "Web User")
    page.click("#domain-edit button.update")
    error = page.locator('#domain-edit [data-error-for="owner"]')
    expect(error).to_contain_text("lower-case letter")
    assert accounts.domain_owners(node) == {"example.test": ""}
    page.fill("#de-owner", "web1")
    submit(page, "domain-edit", "Domain changed.")
    assert accounts.domain_owners(node) == {"example.test": "web1"}
    expect(page.locator('tr[data-domain="example.test"] td').nth(1)).to_have_text("web1")


def test_the_api_carries_usage_and_refuses_what_the_page_refuses(node: Home) -> None:
    token = create_token(node, "accounts-edit")
    with httpx.Client(base_url=panel_url(node) + "/api/v1", verify=False, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        listed = {m["address"]: m for m in api.get("/mailboxes").json()}
        assert listed[ANN]["used_bytes"] == USED and listed[ANN]["percent"] == 105.6
        refused = api.patch(f"/mailboxes/{ANN}", json={"quota_mb": -5, "active": False})
        assert refused.status_code == 422
        assert refused.json()["field"] == "quota_mb" and refused.json()["value"] == -5
        assert accounts.get_mailbox(node, ANN).active  # nothing changed
        made = api.post("/mailboxes", json={"address": "cy@example.test", "password": "pw 1",
                                            "quota_mb": accounts.MAX_QUOTA_MB + 1})
        assert made.status_code == 422 and made.json()["field"] == "quota_mb"
        assert made.json()["reason"] == accounts.QUOTA_ALLOWED
        assert accounts.get_mailbox(node, "cy@example.test") is None
        changed = api.patch(f"/mailboxes/{ANN}", json={"quota_mb": 0})
        assert changed.status_code == 200
        assert (changed.json()["quota_mb"], changed.json()["percent"]) == (0, None)
        assert rcpt(node, ANN)[0] == 250  # no quota, no refusal
        assert api.patch("/mailboxes/nobody@example.test", json={"active": True}
                         ).status_code == 404
        domain = api.patch("/domains/example.test", json={"owner": ""})
        assert domain.status_code == 200 and domain.json()["owner"] == ""
        bad = api.patch("/domains/example.test", json={"owner": "../x"})
        assert bad.status_code == 422 and bad.json()["field"] == "owner"
        assert api.patch("/domains/other.test", json={"owner": "x"}).status_code == 404
        totals = api.get("/usage/domains").json()
        assert totals == [{"name": "example.test", "mailboxes": 2, "used_bytes": USED + BOB_BYTES,
                           "quota_mb": 0, "unlimited": 2}]

"""The queue browser on the panel: the JSON API (filtered pages, actions on ids or a filter)
and the Mail Queue page in Chromium (filters, paging, ticking messages, hold, release,
bounce, the message's recipient states). The panel runs alone, so changes are made directly
under the send service's lock, as with the service stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from panel_helpers import ADMIN, ADMIN_PASSWORD, PanelNode, as_mail_owner, screenshot
from playwright.sync_api import Browser, Page, expect

from mailyard.queue import Envelope, Queue, attempts, holds
from mailyard.queue import state as qstate

WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)


def _queue(panel: PanelNode, sender: str, rcpts: list[str], split: bool = False) -> str:
    """A message queued as the mail owner (as the SMTP service queues it)."""
    def work() -> str:
        q = Queue(panel.home.queue_dir)
        with q.open_message() as w:
            w.write(f"From: {sender}\nSubject: queued\n\nhello\n".encode())
            qid = w.commit(Envelope(sender=sender, recipients=rcpts, client_ip="192.0.2.9",
                                    auth_user="webuser@shop.test"))
        if split:
            qstate.split_todo(q, [(qid, qstate.read_todo(q, qid))], lambda r: False)
        return str(qid)
    return str(as_mail_owner(work))


@pytest.fixture
def clean_queue(panel: PanelNode) -> Iterator[None]:
    with panel.api() as api:
        api.post("/api/v1/queue/purge", json={"queues": ["all"]}).raise_for_status()
    yield
    with panel.api() as api:
        api.post("/api/v1/queue/purge", json={"queues": ["all"]}).raise_for_status()


@pytest.fixture
def page(browser: Browser, panel: PanelNode) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1500, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.goto(panel.url + "/signin?next=/queue")
    tab.fill("#username", ADMIN)
    tab.fill("#password", ADMIN_PASSWORD)
    tab.click("button[type=submit]")
    expect(tab).to_have_url(panel.url + "/queue")
    yield tab
    context.close()


def test_api_pages_filters_and_acts_on_ids_or_a_filter(panel: PanelNode,
                                                       clean_queue: None) -> None:
    spam = [_queue(panel, "spammer@shop.test", [f"v{i}@far.test"]) for i in range(3)]
    good = _queue(panel, "ann@shop.test", ["bob@far.test"], split=True)
    q = Queue(panel.home.queue_dir)
    as_mail_owner(lambda: attempts.write(q, good, {"bob@far.test": {
        "attempts": 1, "last_reply": "451 later", "next_retry": time.time() + 300}}))
    with panel.api() as api:
        page = api.get("/api/v1/queue/browse", params={"limit": 2}).json()
        assert page["total"] == 4 and [m["id"] for m in page["messages"]] == spam[:2]
        page = api.get("/api/v1/queue/browse", params={"state": "deferred"}).json()
        assert [m["id"] for m in page["messages"]] == [good]
        bob = page["messages"][0]["recipients"][0]
        assert bob["state"] == "deferred" and bob["attempts"] == 1 and bob["next_retry"]
        assert page["messages"][0]["auth_user"] == "webuser@shop.test"
        refused = api.get("/api/v1/queue/browse", params={"older_than": "soon"})
        assert refused.status_code == 422 and refused.json()["field"] == "older_than"

        nothing = api.post("/api/v1/queue/actions", json={"action": "hold"})
        assert nothing.status_code == 422 and nothing.json()["field"] == "ids"
        held = api.post("/api/v1/queue/actions", json={
            "action": "hold", "filter": {"sender": "spammer@"}, "reason": "compromised"})
        assert held.status_code == 200, held.text
        assert held.json()["ids"] == spam and held.json()["via"] == "direct"
        assert holds.held_ids(q) == set(spam)
        page = api.get("/api/v1/queue/browse", params={"held": "true"}).json()
        assert page["total"] == 3 and page["messages"][0]["hold_reason"] == "compromised"
        detail = api.get(f"/api/v1/queue/messages/{spam[0]}").json()
        assert detail["held"] and detail["recipients"][0]["state"] == "pending"
        gone = api.post("/api/v1/queue/actions", json={"action": "release", "ids": ["999999999"]})
        assert gone.status_code == 404
        done = api.post("/api/v1/queue/actions", json={"action": "delete", "ids": spam[:1]})
        assert done.json()["count"] == 1 and api.get("/api/v1/queue/stats").json()["todo"] == 2


def test_the_queue_page_filters_pages_ticks_and_acts(page: Page, panel: PanelNode,
                                                     clean_queue: None) -> None:
    many = [_queue(panel, "news@list.test", [f"r{i}@far.test"]) for i in range(52)]
    mine = _queue(panel, "ann@shop.test", ["<b>bob</b>@far.test", "carl@far.test"], split=True)
    page.goto(panel.url + "/queue")
    expect(page.locator("#match-count")).to_have_text("53 messages")
    expect(page.locator("table.queue-list tbody tr[data-qid]")).to_have_count(50)
    page.click("#paging a[rel=next]")
    expect(page.locator("table.queue-list tbody tr[data-qid]")).to_have_count(3)
    expect(page.locator(f'tr[data-qid="{mine}"]')).to_contain_text("<b>bob</b>@far.test — pending")

    page.fill("#f-sender", "news@")
    page.fill("#f-older", "0s")
    page.click("#queue-filter button[type=submit]")
    expect(page.locator("#match-count")).to_have_text("52 messages")
    page.select_option("#filter-actions select[name=action]", "hold")
    page.fill("#filter-actions input[name=reason]", "newsletter review")
    page.click("#filter-actions button[type=submit]")
    expect(page.locator(".flash, #actions-status").first).to_contain_text("Done.")
    q = Queue(panel.home.queue_dir)
    assert holds.held_ids(q) == set(many)

    page.goto(panel.url + "/queue?held=yes")
    expect(page.locator("#match-count")).to_have_text("52 messages")
    row = page.locator(f'tr[data-qid="{many[0]}"]')
    expect(row).to_contain_text("held: newsletter review")
    screenshot(page, "queue-browser-held")
    row.locator("input[name=ids]").check()
    page.locator(f'tr[data-qid="{many[1]}"] input[name=ids]').check()
    page.select_option("#queue-actions select[name=action]", "release")
    page.click("#queue-actions button[type=submit]")
    expect(page.locator("#match-count")).to_have_text("50 messages")
    assert holds.held_ids(q) == set(many[2:])

    page.goto(panel.url + f"/queue/message/{mine}")
    expect(page.locator("#recipient-states tbody tr")).to_have_count(2)
    expect(page.locator("#hold-state")).to_have_text("no")
    expect(page.locator("a.trail")).to_have_attribute("href", f"/trail?q={mine}")
    page.click('#message-actions button[data-action="bounce"]')
    expect(page.locator('#recipient-states tr[data-state="failed"]')).to_have_count(2)
    screenshot(page, "queue-browser-bounced")
    reports = qstate.read_bounce_reports(q, mine)
    assert {r.recipient for r in reports} == {"<b>bob</b>@far.test", "carl@far.test"}

"""Sign-in checks at most a few passwords at once (argon2 takes 64 MiB each); a burst beyond
that is told to come back, never told that a right password is wrong (issue 16, item 9)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi.testclient import TestClient
from panel_helpers import ADMIN, ADMIN_PASSWORD, PanelNode, make_home, signin_form_token

from mailyard.panel.app import create_app
from mailyard.panel.sessions import COOKIE_NAME
from mailyard.panel.throttle import BUSY_RETRY_SECONDS, MAX_CONCURRENT_PASSWORD_CHECKS

BASE = "https://127.0.0.1"


def _post_signin(client: httpx.Client | TestClient, origin: str) -> httpx.Response:
    token = signin_form_token(client)  # type: ignore[arg-type]
    return client.post("/signin", data={"username": ADMIN, "password": ADMIN_PASSWORD,
                                        "csrf_token": token}, headers={"Origin": origin},
                       follow_redirects=False)


def test_a_sign_in_finding_every_check_slot_busy_is_told_to_retry(tmp_path):
    home = make_home(tmp_path)
    app = create_app(home, sample=False)
    gate = app.state.password_checks
    assert gate.limit == MAX_CONCURRENT_PASSWORD_CHECKS
    with TestClient(app, base_url=BASE) as client:
        held = [gate.slot() for _ in range(gate.limit)]
        assert all(h.__enter__() for h in held)  # as many checks as allowed are running
        try:
            busy = _post_signin(client, BASE)
        finally:
            for h in held:
                h.__exit__(None, None, None)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == str(BUSY_RETRY_SECONDS)
        assert "Too many sign-ins at once" in busy.text
        assert COOKIE_NAME not in client.cookies
        # the slots free again: the same sign-in goes through, and the busy answer did not
        # count as a failed attempt against the client
        done = _post_signin(client, BASE)
        assert done.status_code == 303
        assert COOKIE_NAME in client.cookies


def test_a_burst_of_right_passwords_is_never_told_they_are_wrong(panel: PanelNode):
    def attempt(_: int) -> int:
        with panel.client() as client:
            return _post_signin(client, panel.url).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(attempt, range(24)))
    assert set(statuses) <= {303, 503}, statuses
    assert 303 in statuses

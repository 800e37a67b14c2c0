"""Sign-in attempts are slowed down per client: after a few failures even the right password
waits, and the panel says for how long."""

from __future__ import annotations

from panel_helpers import ADMIN, ADMIN_PASSWORD, PanelNode, signin_form_token

from mailyard.panel.sessions import COOKIE_NAME
from mailyard.panel.throttle import FREE_FAILURES


def _attempt(panel: PanelNode, password: str) -> tuple[int, str, bool]:
    with panel.client() as c:
        token = signin_form_token(c)
        answer = c.post("/signin", data={"username": ADMIN, "password": password,
                                         "csrf_token": token}, headers={"Origin": panel.url})
        return answer.status_code, answer.text, COOKIE_NAME in c.cookies


def test_after_repeated_failures_the_client_must_wait(panel: PanelNode) -> None:
    for _ in range(FREE_FAILURES):
        status, _text, signed_in = _attempt(panel, "guess")
        assert status == 401 and not signed_in
    status, _text, _ = _attempt(panel, "one guess too many")
    assert status == 401
    status, text, signed_in = _attempt(panel, ADMIN_PASSWORD)
    assert status == 429 and not signed_in
    assert "Too many failed sign-ins from 127.0.0.1; try again in" in text


def test_the_api_with_a_token_is_not_affected_by_sign_in_throttling(panel: PanelNode) -> None:
    with panel.api() as api:
        assert api.get("/api/v1/queue/stats").status_code == 200

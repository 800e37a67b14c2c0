"""Signing in and out, sessions, CSRF, escaping and the safety headers, with a real HTTP client."""

from __future__ import annotations

from contextlib import closing
from urllib.parse import quote

from panel_helpers import ADMIN, ADMIN_PASSWORD, PanelNode, sign_in, signin_form_token

from mailyard.panel.sessions import COOKIE_NAME
from mailyard.queue import Envelope, Queue
from mailyard.store.settings_store import load_settings


def test_pages_send_a_visitor_who_is_not_signed_in_to_the_sign_in_page(panel: PanelNode) -> None:
    with panel.client() as c:
        for page in ("/", "/mta", "/mda", "/spam", "/virus", "/queue", "/accounts"):
            answer = c.get(page)
            assert answer.status_code == 303
            assert answer.headers["location"] == f"/signin?next={quote(page)}"


def test_a_wrong_password_is_refused_and_keeps_the_user_name(panel: PanelNode) -> None:
    with panel.client() as c:
        token = signin_form_token(c)
        answer = c.post("/signin", data={"username": ADMIN, "password": "wrong",
                                         "csrf_token": token}, headers={"Origin": panel.url})
        assert answer.status_code == 401
        assert "Wrong user name or password" in answer.text
        assert f'value="{ADMIN}"' in answer.text
        assert COOKIE_NAME not in c.cookies


def test_signing_in_without_the_form_token_is_refused(panel: PanelNode) -> None:
    with panel.client() as c:
        answer = c.post("/signin", data={"username": ADMIN, "password": ADMIN_PASSWORD,
                                         "csrf_token": "forged"}, headers={"Origin": panel.url})
        assert answer.status_code == 403
        assert COOKIE_NAME not in c.cookies


def test_the_session_cookie_is_secure_httponly_and_strict(panel: PanelNode) -> None:
    with panel.client() as c:
        token = signin_form_token(c)
        answer = c.post("/signin", data={"username": ADMIN, "password": ADMIN_PASSWORD,
                                         "csrf_token": token}, headers={"Origin": panel.url})
    cookie = next(v for k, v in answer.headers.multi_items()
                  if k == "set-cookie" and v.startswith(COOKIE_NAME))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags


def test_sign_in_never_redirects_to_another_site(panel: PanelNode) -> None:
    with panel.client() as c:
        token = signin_form_token(c)
        answer = c.post("/signin", data={"username": ADMIN, "password": ADMIN_PASSWORD,
                                         "csrf_token": token, "next": "//evil.example/x"},
                        headers={"Origin": panel.url})
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_a_session_changes_state_only_with_its_csrf_token(panel: PanelNode) -> None:
    client, csrf = sign_in(panel)
    with closing(client):
        body = {"value": "55"}
        path = "/api/v1/settings/smtp.message_size_mb"
        assert client.get(path).status_code == 200  # reading needs no token
        assert client.put(path, json=body).status_code == 403
        assert client.put(path, json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
        cross = client.put(path, json=body, headers={"X-CSRF-Token": csrf,
                                                     "Origin": "https://evil.example"})
        assert cross.status_code == 403
        assert load_settings(panel.home)["smtp.message_size_mb"] != 55
        done = client.put(path, json=body, headers={"X-CSRF-Token": csrf, "Origin": panel.url})
        assert done.status_code == 200
    assert load_settings(panel.home)["smtp.message_size_mb"] == 55


def test_signing_out_ends_the_session_for_good(panel: PanelNode) -> None:
    client, csrf = sign_in(panel)
    with closing(client):
        old = client.cookies[COOKIE_NAME]
        refused = client.post("/signout", data={"csrf_token": "wrong"},
                              headers={"Origin": panel.url})
        assert refused.status_code == 403
        assert client.get("/mta").status_code == 200
        out = client.post("/signout", data={"csrf_token": csrf}, headers={"Origin": panel.url})
        assert out.status_code == 303 and out.headers["location"] == "/signin"
    with panel.client(cookies={COOKIE_NAME: old}) as replay:
        assert replay.get("/mta").status_code == 303
        assert replay.get("/api/v1/queue/stats").status_code == 401


def test_pages_carry_the_safety_headers(panel: PanelNode) -> None:
    client, _ = sign_in(panel)
    with closing(client):
        answer = client.get("/mta")
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    own = '<script src="/static/panel.js" defer></script>'
    assert "<script>" not in answer.text.replace(own, "")


def test_text_from_mail_is_escaped_in_the_queue_pages(panel: PanelNode) -> None:
    evil = '<img src=x onerror="alert(1)">@evil.test'
    with Queue(panel.home.queue_dir).open_message() as w:
        w.write(b"Subject: <script>alert('subject')</script>\n\n</pre><script>alert(2)</script>\n")
        qid = w.commit(Envelope(sender=evil, recipients=['"<b>bold</b>"@example.net']))
    client, _ = sign_in(panel)
    with closing(client):
        listing = client.get("/queue").text
        detail = client.get(f"/queue/message/{qid}").text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;@evil.test" in listing
    assert "<img src=x" not in listing and "<b>bold</b>" not in listing
    assert "&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;" in detail
    assert "<script>alert" not in detail and "</pre><script>" not in detail


def test_values_typed_into_settings_are_escaped_in_the_form(panel: PanelNode) -> None:
    client, csrf = sign_in(panel)
    with closing(client):
        put = client.put("/api/v1/settings/smtp.greeting",
                         json={"value": '"><script>alert(3)</script>'},
                         headers={"X-CSRF-Token": csrf, "Origin": panel.url})
        assert put.status_code == 200
        page = client.get("/mta").text
    assert 'value="&#34;&gt;&lt;script&gt;alert(3)&lt;/script&gt;"' in page
    assert "<script>alert(3)" not in page


def test_an_oversized_request_is_refused_unread(panel: PanelNode) -> None:
    with panel.client() as c:
        answer = c.post("/signin", content=b"username=" + b"a" * (2 * 1024 * 1024),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 413
        api = c.put("/api/v1/settings", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                    headers={"Authorization": f"Bearer {panel.token}",
                             "Content-Type": "application/json"})
        assert api.status_code == 413

"""The JSON API against a running panel: bearer tokens, settings, queue, accounts, preferences."""

from __future__ import annotations

import re

import pytest
from panel_helpers import PanelNode

from mailyard.panel import rrd
from mailyard.queue import Envelope, Queue
from mailyard.settings.registry import REGISTRY
from mailyard.store import accounts
from mailyard.store.settings_store import load_settings


def inject(node: PanelNode, sender: str, recipients: list[str], text: str) -> str:
    """Put a message into the node's queue as a local program would."""
    with Queue(node.home.queue_dir).open_message() as w:
        w.write(text.encode())
        return w.commit(Envelope(sender=sender, recipients=recipients))


def test_a_request_without_a_token_is_refused_with_401(panel: PanelNode) -> None:
    with panel.client() as c:
        for method, path in [("GET", "/api/v1/queue/stats"), ("GET", "/api/v1/settings"),
                             ("PUT", "/api/v1/settings/smtp.greeting"),
                             ("POST", "/api/v1/services/smtp/stop"),
                             ("POST", "/api/v1/queue/purge")]:
            answer = c.request(method, path, json={"value": "x"})
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"] == "Bearer"


def test_a_wrong_or_malformed_token_is_refused_with_401(panel: PanelNode) -> None:
    with panel.client() as c:
        for header in ["Bearer myd_not-a-token", "Bearer " + panel.token + "x",
                       "Basic dGVzdGVyOnBhc3M=", "Bearer", panel.token]:
            answer = c.get("/api/v1/queue/stats", headers={"Authorization": header})
            assert answer.status_code == 401, header


def test_queue_stats_count_the_messages_in_the_queue(panel: PanelNode) -> None:
    with panel.api() as api:
        before = api.get("/api/v1/queue/stats").json()
        assert set(before) == {"todo", "local", "remote"}
        inject(panel, "a@example.net", ["b@example.net"], "Subject: one\n\nbody\n")
        inject(panel, "a@example.net", ["c@example.net"], "Subject: two\n\nbody\n")
        after = api.get("/api/v1/queue/stats").json()
        # Nothing sorts the queue here (no send service), so both wait in todo.
        assert after == {**before, "todo": before["todo"] + 2}
        api.post("/api/v1/queue/purge", json={"queues": ["all"]}).raise_for_status()
        assert api.get("/api/v1/queue/stats").json() == {"todo": 0, "local": 0, "remote": 0}


def test_a_setting_reads_with_its_label_help_and_what_is_allowed(panel: PanelNode) -> None:
    with panel.api() as api:
        body = api.get("/api/v1/settings/smtp.message_size_mb").json()
    spec = REGISTRY["smtp.message_size_mb"]
    assert body["value"] == load_settings(panel.home)["smtp.message_size_mb"]
    assert body["label"] == spec.label and body["help"] == spec.help
    assert body["allowed"] == spec.type.describe()


def test_put_changes_the_stored_setting(panel: PanelNode) -> None:
    with panel.api() as api:
        answer = api.put("/api/v1/settings/smtp.message_size_mb", json={"value": 35})
        assert answer.status_code == 200, answer.text
        assert answer.json()["values"] == {"smtp.message_size_mb": 35}
        assert api.get("/api/v1/settings/smtp.message_size_mb").json()["value"] == 35
    assert load_settings(panel.home)["smtp.message_size_mb"] == 35


@pytest.mark.parametrize("key, value", [
    ("smtp.greeting", "hello\r\n250 injected"),
    ("smtp.greeting", "x" * 201),
    ("smtp.max_connections", "0"),
    ("smtp.max_connections", [5]),
    ("server.hostname", "mail example com"),
    ("spam.reporting_method", "attach; include /etc/passwd"),
    ("send.smtp_routes", "example.com:relay.example.net\n:relay with spaces"),
    ("spam.trusted_networks", "10.0.0.0/8\ninclude /etc/shadow"),
    ("smtp.auth_mode", "auth_required/tls_required"),
    ("smtp.greeting", {"text": "an object"}),
    ("smtp.greeting", None),
    ("smtp.rbl_zones", ["bl.example.net", 7]),
])
def test_a_refused_value_answers_422_with_field_value_and_reason(panel: PanelNode, key: str,
                                                                 value: object) -> None:
    before = load_settings(panel.home)[key]
    with panel.api() as api:
        answer = api.put(f"/api/v1/settings/{key}", json={"value": value})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["field"] == key
    assert body["reason"]
    # The value as given, to show beside the field; for a list, the line that was refused.
    assert body["value"] == value or body["value"] in str(value).splitlines()[1:]
    assert load_settings(panel.home)[key] == before


def test_several_settings_change_together_or_not_at_all(panel: PanelNode) -> None:
    with panel.api() as api:
        refused = api.put("/api/v1/settings", json={"values": {
            "smtp.timeout": "900", "smtp.max_connections": "lots"}})
        assert refused.status_code == 422
        assert refused.json()["field"] == "smtp.max_connections"
        assert load_settings(panel.home)["smtp.timeout"] != 900
        done = api.put("/api/v1/settings", json={"values": {
            "smtp.timeout": "900", "smtp.max_connections": "30"}, "cascade": True})
        assert done.status_code == 200, done.text
        assert done.json()["cascade"] is True and done.json()["nodes"] == ["node1"]
    values = load_settings(panel.home)
    assert (values["smtp.timeout"], values["smtp.max_connections"]) == (900, 30)


def test_a_box_cascaded_through_the_api_keeps_per_node_settings_on_the_node(
        panel: PanelNode) -> None:
    with panel.api() as api:
        done = api.put("/api/v1/settings", json={"values": {
            "submission.port": "2587", "submission.smtps_port": "2465",
            "submission.auth_mode": "auth_withtls/tls_optional"}, "cascade": True})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["cascaded"] == ["submission.auth_mode"]
        assert body["node_only"] == ["submission.port", "submission.smtps_port"]
        assert body["restarted"] == []  # the panel runs alone here: nothing to restart
        # asked for one per-node key with cascade, the API still refuses it
        one = api.put("/api/v1/settings/submission.port", json={"value": "2588",
                                                                 "cascade": True})
        assert one.status_code == 422 and "cannot be cascaded" in one.text
        # a refused value in a mixed box stores neither part
        refused = api.put("/api/v1/settings", json={"values": {
            "submission.port": "2589", "submission.auth_mode": "nonsense"}, "cascade": True})
        assert refused.status_code == 422
    values = load_settings(panel.home)
    assert (values["submission.port"], values["submission.smtps_port"]) == (2587, 2465)
    assert values["submission.auth_mode"] == "auth_withtls/tls_optional"


def test_an_unknown_setting_is_404(panel: PanelNode) -> None:
    with panel.api() as api:
        assert api.get("/api/v1/settings/no.such.key").status_code == 404
        assert api.put("/api/v1/settings/no.such.key", json={"value": 1}).status_code == 404


def test_services_report_state_and_cannot_act_without_a_running_node(panel: PanelNode) -> None:
    with panel.api() as api:
        rows = {r["name"]: r for r in api.get("/api/v1/services").json()}
        assert set(rows) == set(REGISTRY_SERVICES)
        assert all(r["state"] == "STOPPED" for r in rows.values())
        answer = api.post("/api/v1/services/smtp/start")
        assert answer.status_code == 409
        assert "not running" in answer.json()["detail"]
        assert api.post("/api/v1/services/panel/stop").status_code == 409
        assert api.post("/api/v1/services/nonsense/start").status_code == 422


REGISTRY_SERVICES = sorted({k.split(".")[1] for k in REGISTRY if k.startswith("service.")})


def test_domains_mailboxes_and_aliases_through_the_api(panel: PanelNode) -> None:
    with panel.api() as api:
        assert api.post("/api/v1/domains", json={"name": "api.test", "owner": "web7"}
                        ).status_code == 201
        bad = api.post("/api/v1/domains", json={"name": "not a domain"})
        assert bad.status_code == 422 and bad.json()["field"] == "name"
        made = api.post("/api/v1/mailboxes", json={"address": "Ann@API.test",
                                                   "password": "s3cret pass"})
        assert made.status_code == 201 and made.json()["address"] == "ann@api.test"
        elsewhere = api.post("/api/v1/mailboxes", json={"address": "x@nowhere.test",
                                                        "password": "pw"})
        assert elsewhere.status_code == 422 and elsewhere.json()["field"] == "address"
        changed = api.patch("/api/v1/mailboxes/ann@api.test",
                            json={"password": "new pass", "spam_action": "inbox"})
        assert changed.status_code == 200 and changed.json()["spam_action"] == "inbox"
        assert accounts.check_mailbox_password(panel.home, "ann@api.test", "new pass")
        alias = api.post("/api/v1/aliases", json={"source": "info@api.test",
                                                  "targets": ["ann@api.test"]})
        assert alias.status_code == 201
        edited = api.put("/api/v1/aliases/info@api.test",
                         json={"targets": ["ann@api.test", "boss@example.net"],
                               "keep_copy": False})
        assert edited.json()["targets"] == ["ann@api.test", "boss@example.net"]
        refused = api.put("/api/v1/aliases/info@api.test", json={"targets": ["not an address"]})
        assert refused.status_code == 422 and refused.json()["field"] == "targets"
        assert accounts.get_alias(panel.home, "info@api.test").targets == [
            "ann@api.test", "boss@example.net"]
        assert api.delete("/api/v1/aliases/info@api.test").status_code == 204
        assert api.delete("/api/v1/mailboxes/ann@api.test").status_code == 204
        assert api.delete("/api/v1/mailboxes/ann@api.test").status_code == 404
        assert api.delete("/api/v1/domains/api.test").status_code == 204
    assert accounts.list_domains(panel.home) == [] or all(
        d["name"] != "api.test" for d in accounts.list_domains(panel.home))


def test_spam_preferences_add_edit_delete_and_bulk_delete(panel: PanelNode) -> None:
    with panel.api() as api:
        names = api.get("/api/v1/spam/preference-names").json()
        assert "required_score" in names and "include" not in names
        one = api.post("/api/v1/spam/preferences", json={
            "preference": "required_score", "value": "6.5", "scope": "global"}).json()
        two = api.post("/api/v1/spam/preferences", json={
            "preference": "rewrite_header", "value": "Subject [SPAM]"}).json()
        three = api.post("/api/v1/spam/preferences", json={
            "preference": "whitelist_from", "value": "*@friends.test"}).json()
        edited = api.put(f"/api/v1/spam/preferences/{one['id']}", json={
            "preference": "required_score", "value": "7", "scope": "global"})
        assert edited.status_code == 200 and edited.json()["value"] == "7"
        listed = {p["id"]: p for p in api.get("/api/v1/spam/preferences").json()}
        assert listed[two["id"]]["value"] == "Subject [SPAM]"
        gone = api.post("/api/v1/spam/preferences/delete",
                        json={"ids": [one["id"], two["id"], 999999]}).json()
        assert gone["deleted"] == [one["id"], two["id"]]
        assert api.delete(f"/api/v1/spam/preferences/{three['id']}").status_code == 204
        assert api.get("/api/v1/spam/preferences").json() == []


@pytest.mark.parametrize("preference, value, field", [
    ("include", "/etc/passwd", "preference"),
    ("required_score", "5\ninclude /etc/passwd", "value"),
    ("body", "LOCAL_X /(?{ system('id') })/", "value"),
    ("required_score", "5", "scope"),
])
def test_a_spam_preference_that_could_inject_configuration_is_refused(
        panel: PanelNode, preference: str, value: str, field: str) -> None:
    scope = "domain:bad domain" if field == "scope" else "global"
    with panel.api() as api:
        answer = api.post("/api/v1/spam/preferences", json={
            "preference": preference, "value": value, "scope": scope})
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field
        assert api.get("/api/v1/spam/preferences").json() == []


def test_queue_list_show_and_delete_with_real_messages(panel: PanelNode) -> None:
    qid = inject(panel, "Odd <sender>@example.net", ["rcpt@example.net"],
                 "Subject: <script>alert(1)</script>\n\nhello\n")
    with panel.api() as api:
        rows = {r["id"]: r for r in api.get("/api/v1/queue/messages",
                                            params={"which": "remote+local"}).json()}
        assert rows[qid]["sender"] == "Odd <sender>@example.net"
        assert rows[qid]["recipients"] == ["rcpt@example.net"]
        detail = api.get(f"/api/v1/queue/messages/{qid}").json()
        assert "<script>alert(1)</script>" in detail["message"]
        assert api.delete(f"/api/v1/queue/messages/{qid}").status_code == 200
        assert api.get(f"/api/v1/queue/messages/{qid}").status_code == 404
        assert api.delete(f"/api/v1/queue/messages/{qid}").status_code == 404


def test_a_test_message_goes_into_the_queue(panel: PanelNode) -> None:
    with panel.api() as api:
        made = api.post("/api/v1/queue/test-message", json={
            "to": "someone@example.net", "subject": "Panel test", "body": "Hello."})
        assert made.status_code == 201, made.text
        qid = made.json()["queue_id"]
        detail = api.get(f"/api/v1/queue/messages/{qid}").json()
        assert "Subject: Panel test" in detail["message"]
        refused = api.post("/api/v1/queue/test-message", json={"to": "no address",
                                                               "subject": "x"})
        assert refused.status_code == 422 and refused.json()["field"] == "to"
        missing = api.post("/api/v1/queue/test-message", json={"to": "a@b.test"})
        assert missing.status_code == 422 and missing.json()["field"] == "subject"
        api.post("/api/v1/queue/purge", json={"queues": ["todo"]}).raise_for_status()
        assert api.get(f"/api/v1/queue/messages/{qid}").status_code == 404


def test_process_needs_the_send_service(panel: PanelNode) -> None:
    with panel.api() as api:
        answer = api.post("/api/v1/queue/process")
    assert answer.status_code == 409
    assert "send service is not running" in answer.json()["detail"]


def test_queue_graphs_are_png_and_svg_with_cur_avg_max(panel: PanelNode) -> None:
    with panel.api() as api:
        png = api.get("/api/v1/queue/graph", params={"period": "week", "format": "png"})
        svg = api.get("/api/v1/queue/graph", params={"period": "month", "format": "svg"})
        activity = api.get("/api/v1/queue/activity", params={"period": "day"}).json()
        bad = api.get("/api/v1/queue/graph", params={"period": "year"})
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.content[:400]
    assert set(activity) == {"period", "todo", "local", "remote"}
    assert set(activity["remote"]) == {"cur", "avg", "max"}
    assert bad.status_code == 422 and bad.json()["field"] == "period"



def test_the_panel_samples_the_queue_as_soon_as_it_starts(panel: PanelNode) -> None:
    path = rrd.rrd_path(panel.home)
    assert path == panel.home.var_dir / "rrd" / "queue.rrd"
    # A store made by a graph request would start a minute before the request; the sampler's
    # first sample is stamped after the panel process started.
    assert rrd.last_update(path) >= panel.started_at


def test_the_openapi_description_lists_every_page_action(panel: PanelNode) -> None:
    with panel.client() as c:
        spec = c.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/api/v1/queue/stats", "get"), ("/api/v1/settings/{key}", "put"),
        ("/api/v1/settings", "put"), ("/api/v1/services/{name}/{action}", "post"),
        ("/api/v1/queue/purge", "post"), ("/api/v1/queue/process", "post"),
        ("/api/v1/queue/test-message", "post"), ("/api/v1/queue/messages/{qid}", "delete"),
        ("/api/v1/domains", "post"), ("/api/v1/mailboxes/{address}", "patch"),
        ("/api/v1/aliases/{source}", "put"), ("/api/v1/spam/preferences", "post"),
        ("/api/v1/spam/preferences/{pref_id}", "put"),
        ("/api/v1/spam/preferences/delete", "post"),
    ]:
        assert method in paths[path], (path, method)
    assert not any(re.search(r"signin|mta", p) for p in paths)

"""The root helper's list of requests, checked without a socket (services/helper.py)."""

from __future__ import annotations

import json

import pytest

from mailyard.services import helper
from mailyard.services.helper import HelperRefused, check


def test_each_request_on_the_list_is_accepted_with_its_arguments_normalised() -> None:
    assert check({"request": "service", "args": {"action": "reload", "name": "imap"}}) == (
        "service", {"action": "reload", "name": "imap"})
    assert check({"request": "make-maildir", "args": {"address": " Ann@Example.TEST "}}) == (
        "make-maildir", {"address": "ann@example.test"})
    assert check({"request": "apply-settings",
                  "args": {"keys": ["imap.max_connections", "imap.max_connections"]}}) == (
        "apply-settings", {"keys": ["imap.max_connections"], "unchanged": []})
    assert check({"request": "queue", "args": {"action": "purge", "which": "todo"}}) == (
        "queue", {"action": "purge", "which": "todo"})
    assert check({"request": "tls-install", "args": {"cert_pem": "C", "key_pem": "K"}}) == (
        "tls-install", {"cert_pem": "C", "key_pem": "K", "domain": None})


def test_the_browser_trail_usage_and_limits_requests_are_accepted() -> None:
    assert check({"request": "queue", "args": {
        "action": "browse", "filter": {"sender": "ann@", "older_than": 3600, "held": True,
                                       "state": "deferred", "which": "remote"},
        "offset": 50, "limit": 50}}) == ("queue", {
            "action": "browse", "offset": 50, "limit": 50,
            "filter": {"sender": "ann@", "older_than": 3600, "held": True,
                       "state": "deferred", "which": "remote"}})
    assert check({"request": "queue", "args": {"action": "browse"}})[1] == {
        "action": "browse", "filter": {"which": "all"}, "offset": 0, "limit": 500}
    assert check({"request": "queue", "args": {
        "action": "act", "operation": "hold", "ids": ["12", "12", "7"],
        "reason": "spam run"}})[1] == {
            "action": "act", "operation": "hold", "ids": ["12", "7"], "filter": None,
            "reason": "spam run"}
    assert check({"request": "queue", "args": {
        "action": "act", "operation": "delete", "filter": {"domain": "shop.test"}}})[1][
            "filter"] == {"domain": "shop.test", "which": "all"}
    assert check({"request": "trail", "args": {"q": "<m@x>", "since": 1.5e9, "limit": 200}}) \
        == ("trail", {"q": "<m@x>", "since": 1.5e9, "limit": 200})
    assert check({"request": "usage", "args": {}}) == (
        "usage", {"address": None, "domain": None})
    assert check({"request": "usage", "args": {"address": "Ann@Example.TEST"}})[1][
        "address"] == "ann@example.test"
    assert check({"request": "limits", "args": {"part": "over"}}) == ("limits", {"part": "over"})
    assert check({"request": "limits", "args": {}}) == ("limits", {"part": "report"})


def test_a_page_of_the_browser_and_a_trail_fit_an_answer() -> None:
    """The answer bound covers the biggest answers the panel asks for: the API's biggest
    page (500 messages) of messages with 100 recipients each (RFC 5321 4.5.3.1.8's
    least a server must take), each with a last reply of a whole reply line (512, 4.5.3.1.5),
    and a trail of the most messages the API allows."""
    recipient = {"address": "r" * 64 + "@" + "d" * 190, "channel": "remote", "done": False,
                 "state": "deferred", "attempts": 99, "last_reply": "4" * 512,
                 "next_retry": "2026-12-02T16:00:00+00:00"}
    message = {"id": "9" * 20, "sender": "s" * 320, "recipients": [recipient] * 100}
    page = json.dumps({"total": 10**6, "messages": [message] * 500})
    assert len(page) < helper.MAX_ANSWER_BYTES
    attempt = {"recipient": "r" * 320, "result": "deferral", "report": "4" * 512}
    trailed = {"id": "9" * 20, "sender": "s" * 320, "attempts": [attempt] * 10}
    assert len(json.dumps({"messages": [trailed] * helper.MAX_TRAIL_LIMIT})) \
        < helper.MAX_ANSWER_BYTES
    ids = json.dumps({"request": "queue", "args": {"action": "act", "operation": "hold",
                                                   "ids": ["9" * 20] * helper.MAX_ACTION_IDS}})
    assert len(ids) < helper.MAX_REQUEST_BYTES


@pytest.mark.parametrize(("message", "words"), [
    ([], "a request is"),
    ({"request": "service", "args": {}, "extra": 1}, "a request is"),
    ({"request": "reboot"}, "unknown request 'reboot'"),
    ({"request": "service", "args": "start smtp"}, "'args' must be an object"),
    ({"request": "service", "args": {"action": "stop", "name": "panel"}},
     "cannot be stopped from the panel"),
    ({"request": "service", "args": {"action": "restart", "name": "helper"}},
     "cannot be restarted from the panel"),
    ({"request": "service", "args": {"action": "start", "name": 5}}, "must be text"),
    ({"request": "make-maildir", "args": {"address": "a/b@example.test"}},
     "not a mailbox address"),
    ({"request": "make-maildir", "args": {"address": "ann@localhost"}}, "not a mailbox address"),
    ({"request": "queue", "args": {"action": "delete", "id": "12a"}}, "not a queue id"),
    ({"request": "queue", "args": {"action": "purge", "which": "../todo"}}, "unknown queue"),
    ({"request": "queue", "args": {"action": "process", "id": "1"}}, "unknown argument 'id'"),
    ({"request": "apply-settings", "args": {"keys": ["smtp.greeting"],
                                            "unchanged": ["smtp.banner"]}},
     "is not a setting key"),
    ({"request": "apply-settings", "args": {"keys": [], "unchanged": ["smtp.max_connections"]}},
     "may only name keys in 'keys'"),
    ({"request": "tls-install", "args": {"cert_pem": "C", "key_pem": "K",
                                         "domain": "/etc/ssl"}}, "not a domain name"),
    ({"request": "tls-install", "args": {"cert_pem": "C\x00", "key_pem": "K"}}, "NUL"),
    ({"request": "status", "args": {"with_versions": "yes"}}, "must be true or false"),
    # the queue browser: fixed fields, bounded numbers, the owning modules' choices
    ({"request": "queue", "args": {"action": "browse", "path": "/etc"}},
     "unknown argument 'path'"),
    ({"request": "queue", "args": {"action": "browse", "limit": 501}},
     "'limit' must be a whole number from 1 to 500"),
    ({"request": "queue", "args": {"action": "browse", "limit": True}}, "whole number"),
    ({"request": "queue", "args": {"action": "browse", "offset": -1}}, "whole number"),
    ({"request": "queue", "args": {"action": "browse", "filter": "sender=a"}},
     "'filter' must be an object"),
    ({"request": "queue", "args": {"action": "browse", "filter": {"dir": "todo"}}},
     "unknown argument 'dir'"),
    ({"request": "queue", "args": {"action": "browse", "filter": {"sender": "x" * 321}}},
     "longer than 320"),
    ({"request": "queue", "args": {"action": "browse", "filter": {"state": "lost"}}},
     "state 'lost' is not allowed"),
    ({"request": "queue", "args": {"action": "browse", "filter": {"which": "../info"}}},
     "which '../info' is not allowed"),
    ({"request": "queue", "args": {"action": "browse", "filter": {"held": "yes"}}},
     "'held' must be true or false"),
    ({"request": "queue", "args": {"action": "browse", "filter": {"older_than": "3d"}}},
     "'older_than' must be a whole number"),
    ({"request": "queue", "args": {"action": "act", "operation": "shred", "ids": ["1"]}},
     "operation 'shred' is not allowed"),
    ({"request": "queue", "args": {"action": "act", "operation": "hold", "ids": ["1; rm"]}},
     "not a queue id"),
    ({"request": "queue", "args": {"action": "act", "operation": "hold", "ids": [1]}},
     "not a queue id"),
    ({"request": "queue", "args": {"action": "act", "operation": "hold",
                                   "ids": ["1"] * 10_001}}, "at most 10000 queue ids"),
    ({"request": "queue", "args": {"action": "act", "operation": "delete"}},
     "names no message"),
    ({"request": "queue", "args": {"action": "act", "operation": "delete",
                                   "filter": {"which": "all"}}}, "names no message"),
    ({"request": "queue", "args": {"action": "act", "operation": "hold", "ids": ["1"],
                                   "reason": "r" * 201}}, "longer than 200"),
    # the trail, usage and the rate counters
    ({"request": "trail", "args": {"q": "", "limit": 10}}, "may not be empty"),
    ({"request": "trail", "args": {"q": "a@b", "limit": 0}}, "from 1 to 5000"),
    ({"request": "trail", "args": {"q": "a@b", "limit": 10, "logs": "/var/log"}},
     "unknown argument 'logs'"),
    ({"request": "trail", "args": {"q": "a@b", "limit": 10, "since": "3 days"}},
     "seconds since the epoch"),
    ({"request": "trail", "args": {"q": "a@b", "limit": 10, "since": float("inf")}},
     "seconds since the epoch"),
    ({"request": "usage", "args": {"address": "../../etc@x"}}, "usage: '../../etc@x' is not"),
    ({"request": "usage", "args": {"domain": "../mail"}}, "not a domain name"),
    ({"request": "usage", "args": {"address": "a@example.test", "domain": "example.test"}},
     "not both"),
    ({"request": "limits", "args": {"part": "rates"}}, "part 'rates' is not allowed"),
    ({"request": "limits", "args": {"file": "over"}}, "unknown argument 'file'"),
])
def test_anything_else_is_refused_saying_what_was_wrong(message: object, words: str) -> None:
    with pytest.raises(HelperRefused) as caught:
        check(message)
    assert words in str(caught.value)


def test_a_line_that_is_not_json_is_refused() -> None:
    with pytest.raises(HelperRefused, match="one line of JSON"):
        helper.decode(b"\xff\xfe{")

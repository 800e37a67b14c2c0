"""The root helper's list of requests, checked without a socket (services/helper.py)."""

from __future__ import annotations

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
])
def test_anything_else_is_refused_saying_what_was_wrong(message: object, words: str) -> None:
    with pytest.raises(HelperRefused) as caught:
        check(message)
    assert words in str(caught.value)


def test_a_line_that_is_not_json_is_refused() -> None:
    with pytest.raises(HelperRefused, match="one line of JSON"):
        helper.decode(b"\xff\xfe{")

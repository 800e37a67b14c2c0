"""The settings registry: every guide setting declared once, defaults from the guide, clear refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.settings.registry import REGISTRY, SERVICE_NAMES, setting
from mailyard.settings.types import SettingError

CONTRACT_KEYS = """server.hostname server.default_domain smtp.auth_mode smtp.greeting
smtp.max_connections smtp.timeout smtp.message_size_mb smtp.inbound_blacklist
smtp.outbound_blacklist smtp.rbl_zones smtp.relay_networks submission.port submission.auth_mode
send.max_connections send.local_concurrency send.response_timeout send.connect_timeout
send.queue_lifetime send.smtp_routes bounce.from bounce.host bounce.double_enabled
bounce.double_to bounce.double_host spam.smtp_scanning spam.smtp_threshold spam.threshold
spam.rewrite_subject spam.reporting_method spam.auto_whitelist spam.whitelist spam.blacklist
spam.trusted_networks spam.bayes spam.bayes_auto_learn spam.bayes_imap_training
spam.bayes_imap_limit spam.bayes_global virus.smtp_scanning""".split()


def test_every_contract_key_is_declared():
    missing = [k for k in CONTRACT_KEYS if k not in REGISTRY]
    for svc in ("pop3", "pop3s", "imap", "imaps"):
        missing += [k for k in (f"{svc}.memory_limit_mb", f"{svc}.max_connections")
                    if k not in REGISTRY]
    for svc in SERVICE_NAMES:
        keys = [f"service.{svc}.start_on_boot", f"service.{svc}.auto_restart"]
        if svc not in ("pop3", "pop3s", "imap", "imaps"):  # Dovecot's own limits instead
            keys.append(f"service.{svc}.memory_limit_mb")
        missing += [k for k in keys if k not in REGISTRY]
    assert missing == []


@pytest.mark.parametrize("key,default", [
    ("smtp.max_connections", 20), ("smtp.timeout", 1200), ("smtp.message_size_mb", 20),
    ("send.max_connections", 20), ("send.response_timeout", 1200), ("send.connect_timeout", 60),
    ("send.queue_lifetime", 604800), ("bounce.from", "mailer-daemon"),
    ("bounce.double_to", "postmaster"), ("spam.threshold", 5.0), ("spam.bayes_imap_limit", 50),
    ("submission.port", 587), ("send.local_concurrency", 10),
])
def test_defaults_follow_the_guide_and_qmail(key, default):
    assert REGISTRY[key].default == default


def test_every_setting_has_help_a_label_and_a_valid_default():
    for key, spec in REGISTRY.items():
        assert spec.help and spec.label, key
        assert spec.parse(spec.format(spec.default)) == spec.default, key


@pytest.mark.parametrize("word,value", [("on", True), ("YES", True), ("true", True), ("1", True),
                                        ("off", False), ("no", False), ("False", False),
                                        ("0", False)])
def test_booleans_accept_the_usual_words(word, value):
    assert setting("spam.bayes").parse(word) is value


@pytest.mark.parametrize("key,value,fragment", [
    ("smtp.auth_mode", "auth_required/tls_required", "must not require"),
    ("smtp.auth_mode", "sometimes", "one of:"),
    ("smtp.timeout", "-5", "whole number from 10"),
    ("smtp.max_connections", "20 connections", "whole number"),
    ("smtp.greeting", "hello\r\n250 fake", "no line breaks"),
    ("server.hostname", "bad host name", "host or domain name"),
    ("smtp.relay_networks", "10.0.0.0/8\nnot-a-net", "line 2"),
    ("send.smtp_routes", "example.com relay.example", "spaces"),
    ("send.smtp_routes", "example.com:relay.example:99999", "port"),
    ("spam.whitelist", "good@example.com\nfoo bar", "line 2"),
])
def test_refusals_name_the_setting_the_value_and_what_is_allowed(key, value, fragment):
    with pytest.raises(SettingError) as err:
        setting(key).parse(value)
    message = str(err.value)
    assert message.startswith(key + ":")
    assert fragment in message


@pytest.mark.parametrize("route", ["example.com:relay.example", "example.com:relay.example:26",
                                   "example.com:", ":relay.example", ".example.com:",
                                   "example.com:[192.0.2.1]:2525"])
def test_the_guides_smtp_route_forms_are_accepted(route):
    assert setting("send.smtp_routes").parse(route) == [route]


def test_list_settings_drop_blank_lines_and_comments():
    assert setting("smtp.rbl_zones").parse("\n# a comment\nbl.spamcop.net\n\n") == [
        "bl.spamcop.net"]


@given(st.text(max_size=300))
def test_any_text_is_either_accepted_or_refused_clearly(text):
    for key in ("smtp.greeting", "smtp.timeout", "send.smtp_routes", "smtp.inbound_blacklist",
                "server.hostname", "spam.threshold", "smtp.relay_networks", "spam.blacklist"):
        try:
            value = setting(key).parse(text)
        except SettingError as exc:
            assert exc.key == key
        else:
            formatted = setting(key).format(value)
            assert "\r" not in formatted and "\x00" not in formatted

"""Advanced SpamAssassin preferences: the allow-list, scopes, the store and what is rendered."""

from __future__ import annotations

import subprocess

import pytest

from mailyard.filters import prefs, spamd
from mailyard.filters.prefs import ALLOWED, PreferenceError, validate
from mailyard.home import Home
from mailyard.store import accounts


@pytest.mark.parametrize(("preference", "value", "expected"), [
    ("required_score", "6.5", ("required_score", "6.5")),
    ("rewrite_header subject", "--SPAM--", ("rewrite_header", "Subject --SPAM--")),
    ("rewrite_header", "subject [spam]", ("rewrite_header", "Subject [spam]")),
    ("report_safe", "2", ("report_safe", "2")),
    ("use_auto_whitelist", "1", ("use_auto_whitelist", "1")),
    ("welcomelist_from", "*@example.com  joe@example.org",
     ("welcomelist_from", "*@example.com joe@example.org")),
    ("score", "BAYES_99 4.5", ("score", "BAYES_99 4.5")),
    ("add_header", "all Level _STARS(*)_", ("add_header", "all Level _STARS(*)_")),
    ("body", "LOCAL_PILLS /cheap\\s+pills/i", ("body", "LOCAL_PILLS /cheap\\s+pills/i")),
    ("header", "LOCAL_X From =~ /x\\.example/i", ("header", "LOCAL_X From =~ /x\\.example/i")),
    ("meta", "LOCAL_BOTH LOCAL_A && !LOCAL_B", ("meta", "LOCAL_BOTH LOCAL_A && !LOCAL_B")),
])
def test_allowed_preferences_are_accepted_and_normalised(
        preference: str, value: str, expected: tuple[str, str]) -> None:
    name, checked, scope = validate(preference, value)
    assert (name, checked) == expected
    assert scope == "global"


@pytest.mark.parametrize(("preference", "value", "says"), [
    ("include", "/etc/passwd", "'include' is not allowed; allowed are:"),
    ("bayes_path", "/tmp/x", "'bayes_path' is not allowed"),
    ("allow_user_rules", "1", "'allow_user_rules' is not allowed"),
    ("loadplugin", "Evil /tmp/x.pm", "not allowed"),
    ("required_score", "5\ninclude /etc/passwd", "one line without control characters"),
    ("required_score", "lots", "must be a number from 0 to 1000"),
    ("report_safe", "3", "must be one of 0, 1, 2"),
    ("body", "LOCAL_X eval:check_for_evil()", "eval: tests are not allowed"),
    ("body", "LOCAL_X /(?{ system('id') })/", "code blocks"),
    ("body", "LOCAL_X /(??{ 1 })/", "code blocks"),
    ("body", "LOCAL_X /${\\ `id`}/", "variables"),
    ("body", "LOCAL_X /@ARGV/", "variables"),
    ("body", "LOCAL_X /unclosed(/", "does not compile"),
    ("body", "LOCAL_X cheap pills", "/regex/flags"),
    ("meta", "LOCAL_X LOCAL_A && system('x')", "only rule names"),
    ("score", "BAYES_99", "a rule name and one or four scores"),
    ("welcomelist_from", "not an address", "is not an address"),
    ("rewrite_header", "X-Evil text", "must be Subject, From or To"),
    ("ok_locales", "xx", "locale codes"),
])
def test_refused_values_name_the_preference_the_value_and_what_is_allowed(
        preference: str, value: str, says: str) -> None:
    with pytest.raises(PreferenceError) as caught:
        validate(preference, value)
    assert says in str(caught.value)


def test_a_bad_value_error_names_the_preference_and_shows_an_example() -> None:
    with pytest.raises(PreferenceError) as caught:
        validate("required_score", "lots")
    assert str(caught.value).startswith("required_score 'lots':")
    assert "example: required_score 5.0" in str(caught.value)


def test_rule_definitions_are_global_only() -> None:
    with pytest.raises(PreferenceError, match="only with scope global"):
        validate("body", "LOCAL_X /x/", "mailbox:bob@example.com")
    assert validate("score", "LOCAL_X 3", "mailbox:bob@example.com")[2] == \
        "mailbox:bob@example.com"


@pytest.mark.parametrize("scope", ["global", "GLOBAL", "domain:Example.COM",
                                   "mailbox:Bob@Example.com"])
def test_scopes_are_accepted_and_lowercased(scope: str) -> None:
    assert prefs.normalise_scope(scope) == scope.lower()


@pytest.mark.parametrize("scope", ["", "domain:", "domain:bad_domain!", "mailbox:nobody",
                                   "user:bob@example.com", "mailbox:a b@example.com"])
def test_bad_scopes_are_refused_with_the_forms_allowed(scope: str) -> None:
    with pytest.raises(PreferenceError, match="use global, domain:example.com or mailbox:"):
        prefs.normalise_scope(scope)


def test_every_allowed_example_is_itself_valid() -> None:
    for name, allowed in sorted(ALLOWED.items()):
        validate(name, allowed.example)


def test_preferences_are_stored_edited_deleted_and_rendered_by_scope(home: Home) -> None:
    accounts.add_domain(home, "example.com")
    accounts.add_mailbox(home, "bob@example.com", "secret-password-1")
    accounts.add_mailbox(home, "carol@example.com", "secret-password-2")
    g = prefs.add_preference(home, "global", "score", "GTUBE 500")
    d = prefs.add_preference(home, "domain:example.com", "required_score", "7")
    m = prefs.add_preference(home, "mailbox:bob@example.com", "required_score", "3")
    assert [p.id for p in prefs.list_preferences(home)] == [g.id, d.id, m.id]
    assert [p.id for p in prefs.list_preferences(home, "domain:EXAMPLE.com")] == [d.id]

    local_cf = (spamd.site_dir(home) / "local.cf").read_text()
    assert "\nscore GTUBE 500\n" in local_cf
    bob = (spamd.user_dir(home, "bob@example.com") / "user_prefs").read_text()
    carol = (spamd.user_dir(home, "carol@example.com") / "user_prefs").read_text()
    # the mailbox's own line comes after its domain's, so it wins
    assert bob.index("required_score 7") < bob.index("required_score 3")
    assert "required_score 7" in carol and "required_score 3" not in carol

    prefs.edit_preference(home, m.id, "4.5")
    bob = (spamd.user_dir(home, "bob@example.com") / "user_prefs").read_text()
    assert "required_score 4.5" in bob and "required_score 3\n" not in bob
    with pytest.raises(PreferenceError, match="must be a number"):
        prefs.edit_preference(home, m.id, "high")
    assert prefs.list_preferences(home, "mailbox:bob@example.com")[0].value == "4.5"

    prefs.delete_preference(home, d.id)
    carol = (spamd.user_dir(home, "carol@example.com") / "user_prefs").read_text()
    assert "required_score" not in carol
    with pytest.raises(PreferenceError, match="no spam preference with id 9999"):
        prefs.delete_preference(home, 9999)


def test_spamassassin_lints_a_config_holding_every_allowed_example(home: Home) -> None:
    """The allow-list's own examples, all at once in local.cf, are valid SpamAssassin config."""
    for name, allowed in sorted(ALLOWED.items()):
        if name in ("meta", "describe"):
            continue  # they refer to rules of other examples; added below with real names
        prefs.add_preference(home, "global", name, allowed.example, render=False)
    prefs.add_preference(home, "global", "describe", "LOCAL_PILLS mentions cheap pills",
                         render=False)
    prefs.add_preference(home, "global", "meta", "LOCAL_BOTH LOCAL_PILLS && LOCAL_URI",
                         render=False)
    prefs.add_preference(home, "global", "score", "LOCAL_BOTH 0.5")
    lint = subprocess.run(["spamassassin", "--lint", f"--siteconfigpath={spamd.site_dir(home)}"],
                          capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_process_that_may_not_write_the_site_config_still_updates_mailbox_prefs(own_home):
    """The panel may run as the mail owner; spamd's site config is root's. A change made
    there updates the user_prefs at once and leaves local.cf to the next spamd reload."""
    import os
    import sys

    from mailyard.services.privileges import mail_owner

    home = own_home
    accounts.add_domain(home, "example.com")
    accounts.add_mailbox(home, "bob@example.com", "secret-password-1")
    spamd.render(home)
    local_cf = spamd.site_dir(home) / "local.cf"
    before = local_cf.read_text()
    # as the services do: load what is needed, then drop root for the mail owner (the
    # interpreter's own files may be out of the mail owner's reach on test machines)
    script = ("import sys, logging; from mailyard.home import Home; "
              "from mailyard.filters import prefs, spamd; import mailyard.store.accounts; "
              "from mailyard.services.privileges import drop_privileges; "
              "h = Home.find(sys.argv[1]); prefs.list_preferences(h); "
              "drop_privileges(); "
              "prefs.add_preference(h, 'mailbox:bob@example.com', 'required_score', '3'); "
              "prefs.add_preference(h, 'global', 'score', 'GTUBE 900')")
    if os.geteuid() == 0:
        uid, gid = mail_owner()
        os.chown(home.root, uid, gid)
        for path in home.root.glob("store.sqlite*"):
            os.chown(path, uid, gid)
    else:
        os.chmod(spamd.site_dir(home), 0o555)
        os.chmod(local_cf, 0o444)
    argv = [sys.executable, "-c", script, str(home.root)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "apply when spamd is next reloaded" in done.stderr
    assert local_cf.read_text() == before
    bob = (spamd.user_dir(home, "bob@example.com") / "user_prefs").read_text()
    assert "required_score 3" in bob
    assert [p.value for p in prefs.list_preferences(home, "global")] == ["GTUBE 900"]
    os.chmod(spamd.site_dir(home), 0o755)
    spamd.render(home)  # what the reload does, as root
    assert "score GTUBE 900" in local_cf.read_text()

"""The global spam white and black lists take domains (guide 6.1.2, "email addresses or
domains"), checked by how the real spamd scores messages from chosen senders."""

from __future__ import annotations

import pytest
from tests.filters.helpers import Spamd, message, run

from mailyard.filters import spamc, spamd
from mailyard.home import Home
from mailyard.services.apply_settings import change_settings
from mailyard.settings.registry import setting
from mailyard.settings.types import SettingError

# SpamAssassin's USER_IN_WELCOMELIST is -100 and USER_IN_BLOCKLIST +100; an ordinary note
# scores within a few points of 0, so half of that separates the three outcomes safely.
LISTED = 50.0


def test_domains_are_read_as_spamassassin_globs() -> None:
    parse = setting("spam.whitelist").parse
    assert parse("example.com\n@Example.org\n*@old.test\nboss@x.test") == [
        "*@example.com", "*@example.org", "*@old.test", "boss@x.test"]
    assert parse(".example.net\n*.example.info") == [
        "*@example.net *@*.example.net", "*@example.info *@*.example.info"]
    assert parse(parse("a.test .b.test")[0]) == ["*@a.test *@b.test *@*.b.test"]  # stable
    for bad in ("localhost", "a@b@c.test", "*.", "ex_ample.com"):
        with pytest.raises(SettingError, match="an address, a domain or"):
            setting("spam.blacklist").parse(bad)


def test_real_spamd_scores_senders_by_the_domains_listed(own_home: Home) -> None:
    change_settings(own_home, {
        "spam.whitelist": "partner.example\n.friends.example\nboss@work.example",
        "spam.blacklist": "@spammer.example\n*.junk.example\n*@old-style.example",
    }, apply=False)
    spamd.render(own_home)
    daemon = Spamd(own_home)
    daemon.start()
    try:
        def score(sender: str) -> float:
            note = message(sender=sender, msgid=f"<{sender.replace('@', '.')}@test>")
            return run(spamc.check(spamd.socket_path(own_home), note, timeout=120)).score

        welcome = ["a@partner.example", "b@friends.example", "c@mail.friends.example",
                   "boss@work.example"]
        blocked = ["d@spammer.example", "e@junk.example", "f@a.b.junk.example",
                   "g@old-style.example"]
        neither = ["h@mail.partner.example",  # a plain domain is not its subdomains
                   "i@sub.spammer.example", "j@work.example", "k@elsewhere.example"]
        for sender in welcome:
            assert score(sender) < -LISTED, sender
        for sender in blocked:
            assert score(sender) > LISTED, sender
        for sender in neither:
            assert -LISTED < score(sender) < LISTED, sender
    finally:
        daemon.stop()

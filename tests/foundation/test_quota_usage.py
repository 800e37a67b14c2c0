"""Mailbox usage as the CLI shows it (issue 19.4): bytes used, quota and percent per mailbox,
totals per domain; the quota and owner flags refused with the flag, the value and what is
allowed, before anything is asked or changed."""

from __future__ import annotations

import json
import os
import subprocess

from mailyard import quota, usage
from mailyard.home import Home
from mailyard.store import accounts

MB = quota.MB


def run(env: dict[str, str], *args: str, input_: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mailyard", *args], env=env, input=input_, capture_output=True,
                          text=True, timeout=120)


def fill(home: Home, address: str, sizes: list[int], folder: str = "") -> None:
    """Message files as delivery and Dovecot name them (",S=<size>" in the name)."""
    new = home.maildir(address) / folder / "new"
    for i, size in enumerate(sizes):
        (new / f"1700000000.M{i}P1.test,S={size}").write_bytes(b"x" * 10)


def test_usage_from_maildirsize_or_counted_and_totals_per_domain(home: Home) -> None:
    accounts.add_domain(home, "example.org")
    accounts.add_domain(home, "empty.org")
    accounts.add_mailbox(home, "ann@example.org", "a long password", quota_mb=10)
    accounts.add_mailbox(home, "bob@example.org", "a long password")
    ann, bob = home.maildir("ann@example.org"), home.maildir("bob@example.org")
    assert usage.mailbox(home, "ann@example.org").used_bytes == 0  # counted: nothing there
    quota.write_new(ann, 10)
    quota.add(ann, 5 * MB)  # as delivery records a message
    got = usage.mailbox(home, "ann@example.org")
    assert (got.used_bytes, got.percent, got.source) == (5 * MB, 50.0, "maildirsize")
    fill(home, "bob@example.org", [1000, 2000])
    fill(home, "bob@example.org", [500], folder=".Spam")
    got = usage.mailbox(home, "bob@example.org")
    assert (got.used_bytes, got.percent, got.source) == (3500, None, "count")
    elsewhere = home.root / "elsewhere"
    (elsewhere / "new").mkdir(parents=True)
    (elsewhere / "new" / "1.M1P1.test,S=99999").write_bytes(b"x")
    os.symlink(elsewhere, bob / ".Planted")  # a folder that is a link is not followed
    assert usage.mailbox(home, "bob@example.org").used_bytes == 3500
    (ann / quota.MAILDIRSIZE).unlink()
    os.symlink("/etc/passwd", ann / quota.MAILDIRSIZE)  # nor a maildirsize that is a link
    assert usage.mailbox(home, "ann@example.org").used_bytes is None
    assert usage.domains(home) == [
        usage.DomainUsage("empty.org", 0, 0, 0, 0),
        usage.DomainUsage("example.org", 2, 3500, 10, 1)]
    assert usage.mailbox(home, "nobody@example.org") is None


def test_mailbox_list_and_usage_show_used_quota_and_percent(home: Home,
                                                            cli_env: dict[str, str]) -> None:
    assert run(cli_env, "domain", "add", "example.org").returncode == 0
    made = run(cli_env, "mailbox", "add", "fred@example.org", "--quota-mb", "4",
               input_="a long enough password\n")
    assert made.returncode == 0, made.stderr
    maildir = home.maildir("fred@example.org")
    quota.write_new(maildir, 4)
    quota.add(maildir, 3 * MB)
    listed = json.loads(run(cli_env, "mailbox", "list", "--json").stdout)
    assert [(r["address"], r["quota_mb"], r["used_bytes"], r["percent"]) for r in listed] == [
        ("fred@example.org", 4, 3 * MB, 75.0)]
    table = run(cli_env, "mailbox", "list").stdout
    assert "USED" in table and "3.0 MB" in table and "75.0 %" in table, table
    one = run(cli_env, "mailbox", "usage", "fred@example.org")
    assert one.returncode == 0 and "used 3.0 MB of 4 MB (75.0 %)" in one.stdout, one.stdout
    as_json = json.loads(run(cli_env, "mailbox", "usage", "fred@example.org", "--json").stdout)
    assert as_json["used_bytes"] == 3 * MB and as_json["percent"] == 75.0
    missing = run(cli_env, "mailbox", "usage", "nobody@example.org")
    assert missing.returncode == 2 and "no mailbox nobody@example.org" in missing.stderr
    domains = json.loads(run(cli_env, "domain", "usage", "--json").stdout)
    assert domains == [{"name": "example.org", "mailboxes": 1, "used_bytes": 3 * MB,
                        "quota_mb": 4, "unlimited": 0}]


def test_bad_quota_and_owner_flags_are_refused_naming_flag_value_and_range(
        home: Home, cli_env: dict[str, str]) -> None:
    refused = run(cli_env, "domain", "add", "example.org", "--owner", "Web User")
    assert refused.returncode == 2
    assert "--owner" in refused.stderr and "'Web User'" in refused.stderr
    assert "lower-case letter" in refused.stderr and "at most 32" in refused.stderr
    assert accounts.list_domains(home) == []
    assert run(cli_env, "domain", "add", "example.org", "--owner", "web1").returncode == 0
    for args in (["mailbox", "add", "ann@example.org", "--quota-mb", "-5"],
                 ["mailbox", "add", "ann@example.org", "--quota-mb", str(accounts.MAX_QUOTA_MB + 1)]):
        # refused before the password is read: no password is given here
        refused = run(cli_env, *args, input_="")
        assert refused.returncode == 2, refused
        assert "--quota-mb" in refused.stderr and args[-1] in refused.stderr
        assert f"from 0 (no limit) to {accounts.MAX_QUOTA_MB}" in refused.stderr
    assert accounts.list_mailboxes(home) == []
    assert run(cli_env, "mailbox", "add", "ann@example.org", "--quota-mb", "5",
               input_="a long password\n").returncode == 0
    refused = run(cli_env, "mailbox", "set", "ann@example.org", "--quota-mb", "-5",
                  "--active", "no")
    assert refused.returncode == 2 and "--quota-mb: quota -5 MB" in refused.stderr
    assert accounts.get_mailbox(home, "ann@example.org") == accounts.MailboxInfo(
        "ann@example.org", True, 5, "spam_folder")  # nothing half-done: still active
    changed = run(cli_env, "domain", "set", "example.org", "--owner", "web2")
    assert changed.returncode == 0 and "owner=web2" in changed.stdout
    refused = run(cli_env, "domain", "set", "example.org", "--owner", "../root")
    assert refused.returncode == 2 and "--owner" in refused.stderr
    assert accounts.domain_owners(home) == {"example.org": "web2"}
    cleared = run(cli_env, "domain", "set", "example.org", "--owner", "")
    assert cleared.returncode == 0 and accounts.domain_owners(home) == {"example.org": ""}
    unknown = run(cli_env, "domain", "set", "other.org", "--owner", "web2")
    assert unknown.returncode == 2 and "no domain other.org" in unknown.stderr

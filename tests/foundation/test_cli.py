"""The mailyard command as an administrator uses it: init, accounts, settings, status."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import VENV_BIN, free_port_base

from mailyard.home import Home
from mailyard.store import accounts

MAILYARD = str(VENV_BIN / "mailyard")


def run(env, *args, input_=None):
    return subprocess.run([MAILYARD, *args], env=env, input=input_, capture_output=True,
                          text=True, timeout=120)


def test_init_creates_the_documented_layout(home, cli_env):
    # beside the fixture's home: a directory the service users can reach (as root, init
    # refuses one below pytest's 0700 temporary root)
    root = home.root.parent / "fresh"
    env = dict(cli_env, MAILYARD_HOME=str(root))
    out = run(env, "init", "--hostname", "mail.example.org", "--port-base",
              str(free_port_base()))
    assert out.returncode == 0, out.stderr
    assert "password:" in out.stdout
    for name in ("mailyard.toml", "db/store.sqlite", "queue", "mail", "log", "tls/cert.pem",
                 "tls/key.pem", "run", "etc", "var"):
        assert (root / name).exists(), name
    assert (root / "tls/key.pem").stat().st_mode & 0o077 == 0
    again = run(env, "init", "--hostname", "mail.example.org")
    assert again.returncode == 0 and "password:" not in again.stdout  # no second admin


def test_accounts_from_the_command_line(cli_env):
    assert run(cli_env, "domain", "add", "example.org", "--owner", "web1").returncode == 0
    added = run(cli_env, "mailbox", "add", "Ann@Example.org", input_="pass word\n")
    assert added.returncode == 0, added.stderr
    listed = json.loads(run(cli_env, "mailbox", "list", "--json").stdout)
    assert [m["address"] for m in listed] == ["ann@example.org"]
    assert run(cli_env, "mailbox", "passwd", "ann@example.org", input_="other\n").returncode == 0
    nopw = run(cli_env, "mailbox", "add", "bob@example.org", input_="")
    assert nopw.returncode != 0 and "no password" in nopw.stderr
    assert run(cli_env, "alias", "add", "info@example.org", "ann@example.org").returncode == 0
    aliases = json.loads(run(cli_env, "alias", "list", "--json").stdout)
    assert aliases == [{"source": "info@example.org", "targets": ["ann@example.org"],
                        "keep_copy": False}]
    domains = json.loads(run(cli_env, "domain", "list", "--json").stdout)
    assert domains == [{"name": "example.org", "owner": "web1", "mailboxes": 1}]
    bad = run(cli_env, "mailbox", "add", "nobody@elsewhere.org", input_="pw\n")
    assert bad.returncode == 2 and "not a domain of this node" in bad.stderr


def test_a_bad_setting_exits_2_names_it_and_changes_nothing(cli_env):
    before = run(cli_env, "settings", "get", "smtp.timeout").stdout
    out = run(cli_env, "settings", "set", "smtp.timeout", "forever")
    assert out.returncode == 2
    assert "smtp.timeout" in out.stderr and "forever" in out.stderr
    assert "whole number" in out.stderr
    assert run(cli_env, "settings", "get", "smtp.timeout").stdout == before
    refused = run(cli_env, "settings", "set", "smtp.auth_mode", "auth_required/tls_required")
    assert refused.returncode == 2 and "must not require" in refused.stderr
    unknown = run(cli_env, "settings", "set", "smtp.nonsense", "1")
    assert unknown.returncode == 2


def test_settings_set_and_get_including_lists(cli_env):
    assert run(cli_env, "settings", "set", "smtp.rbl_zones", "bl.one.test",
               "bl.two.test").returncode == 0
    assert run(cli_env, "settings", "get", "smtp.rbl_zones").stdout.split() == [
        "bl.one.test", "bl.two.test"]
    assert run(cli_env, "settings", "set", "spam.bayes", "no").returncode == 0
    got = json.loads(run(cli_env, "settings", "get", "spam.bayes", "--json").stdout)
    assert got == {"key": "spam.bayes", "value": False}
    help_ = run(cli_env, "settings", "help", "send.queue_lifetime")
    assert "604800" in help_.stdout and "allowed:" in help_.stdout


def test_status_of_a_stopped_node_lists_every_service(cli_env):
    out = run(cli_env, "status", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows] == ["smtp", "submission", "send", "pop3", "pop3s", "imap",
                                         "imaps", "spamd", "clamd", "freshclam", "panel",
                                         "sendmail"]
    assert all(r["state"] == "STOPPED" and r["pid"] is None for r in rows)
    assert set(rows[0]) == {"name", "state", "pid", "uptime", "version"}


def test_commands_without_a_home_say_how_to_give_one(cli_env):
    env = {k: v for k, v in cli_env.items() if k != "MAILYARD_HOME"}
    out = run(env, "domain", "list")
    assert out.returncode == 1 and "--home" in out.stderr


def test_mailbox_set_changes_quota_and_active_and_refuses_a_negative_quota(
        home: Home, cli_env: dict[str, str]) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mailyard", *args], env=cli_env, capture_output=True, text=True,
                              timeout=60)

    assert run("domain", "add", "example.org").returncode == 0
    made = subprocess.run(["mailyard", "mailbox", "add", "fred@example.org"], env=cli_env,
                          input="a long enough password\n", capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    out = run("mailbox", "set", "fred@example.org", "--quota-mb", "250", "--active", "no")
    assert out.returncode == 0, out.stderr
    assert "active=no quota=250 MB" in out.stdout
    [box] = accounts.list_mailboxes(home, "example.org")
    assert (box.quota_mb, box.active) == (250, False)
    refused = run("mailbox", "set", "fred@example.org", "--quota-mb", "-5")
    assert refused.returncode == 2 and "quota -5 MB" in refused.stderr
    assert accounts.list_mailboxes(home, "example.org")[0].quota_mb == 250
    refused = subprocess.run(["mailyard", "mailbox", "add", "ann@example.org", "--quota-mb", "-1"],
                             env=cli_env, input="a long enough password\n", capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "from 0 (no limit)" in refused.stderr
    assert run("mailbox", "set", "fred@example.org").returncode == 2

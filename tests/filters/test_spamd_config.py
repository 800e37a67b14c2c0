"""spamd's rendered site config: settings map onto SpamAssassin's options, and it lints."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from mailyard.filters import clamd, spamd
from mailyard.home import Home
from mailyard.services.apply_settings import change_settings


def lint(home: Home) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["spamassassin", "--lint", f"--siteconfigpath={spamd.site_dir(home)}"],
                          capture_output=True, text=True, timeout=300)


def lines(home: Home) -> list[str]:
    return (spamd.site_dir(home) / "local.cf").read_text().splitlines()


def test_defaults_render_the_guides_recommended_setup_and_lint(own_home: Home) -> None:
    spamd.render(own_home)
    cf = lines(own_home)
    for expected in ("required_score 5", "report_safe 1", "rewrite_header Subject --SPAM--",
                     "use_auto_welcomelist 1", "use_bayes 1", "bayes_auto_learn 1",
                     "dns_available no", "skip_rbl_checks 1"):
        assert expected in cf
    assert not any(line.startswith("bayes_path") for line in cf)
    pre = (spamd.site_dir(own_home) / spamd.OUR_PRE).read_text()
    assert "loadplugin Mail::SpamAssassin::Plugin::AWL" in pre
    for name in ("v310.pre", "v320.pre", "init.pre"):
        assert (spamd.site_dir(own_home) / name).is_file()
    result = lint(own_home)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("method", "report_safe"),
                         [("unchanged", 0), ("attach", 1), ("attach_plain", 2)])
def test_reporting_method_maps_to_report_safe(own_home: Home, method: str,
                                              report_safe: int) -> None:
    change_settings(own_home, {"spam.reporting_method": method})
    spamd.render(own_home)
    assert f"report_safe {report_safe}" in lines(own_home)


def test_every_option_changed_renders_and_lints(own_home: Home) -> None:
    change_settings(own_home, {
        "spam.threshold": 7.5, "spam.rewrite_subject": "[junk]",
        "spam.auto_whitelist": False, "spam.bayes": False, "spam.bayes_auto_learn": False,
        "spam.bayes_global": True,
        "spam.whitelist": ["boss@example.com", "*@partner.example"],
        "spam.blacklist": ["*@spammer.example"],
        "spam.trusted_networks": ["192.0.2.0/24", "2001:db8::/32"],
    })
    spamd.render(own_home)
    cf = lines(own_home)
    for expected in ("required_score 7.5", "rewrite_header Subject [junk]",
                     "use_auto_welcomelist 0", "use_bayes 0", "bayes_auto_learn 0",
                     "welcomelist_from boss@example.com", "welcomelist_from *@partner.example",
                     "blocklist_from *@spammer.example",
                     "trusted_networks 192.0.2.0/24 2001:db8::/32",
                     f"bayes_path {spamd.global_bayes_dir(own_home) / 'bayes'}"):
        assert expected in cf
    pre = (spamd.site_dir(own_home) / spamd.OUR_PRE).read_text()
    assert "AWL" not in pre
    result = lint(own_home)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_empty_subject_tag_leaves_subjects_alone(own_home: Home) -> None:
    change_settings(own_home, {"spam.rewrite_subject": ""})
    spamd.render(own_home)
    assert not any(line.startswith("rewrite_header") for line in lines(own_home))


def test_argv_runs_spamd_in_the_foreground_on_its_unix_socket_with_virtual_users(own_home):
    argv = spamd.exec_argv(own_home)
    assert argv[0] == spamd.SPAMD
    assert "-x" in argv and "-l" in argv
    assert f"--socketpath={spamd.socket_path(own_home)}" in argv
    assert not any(a.startswith(("--listen", "-i", "--port")) for a in argv)
    assert f"--virtual-config-dir={spamd.virtual_dir(own_home)}/%d/%l" in argv
    assert f"--siteconfigpath={spamd.site_dir(own_home)}" in argv
    assert argv[argv.index("-u") + 1] == spamd.spamd_user()[0]
    assert "-d" not in argv and "--daemonize" not in argv


def test_version_is_what_spamd_reports() -> None:
    assert spamd.version().startswith("SpamAssassin 4.")


def test_the_site_config_is_readable_by_spamds_user_whatever_the_umask(own_home):
    """supervisord's children run with umask 027: what spamd reads after dropping root
    still gets its own modes."""
    old = os.umask(0o027)
    try:
        shutil.rmtree(spamd.site_dir(own_home), ignore_errors=True)
        shutil.rmtree(clamd.db_dir(own_home).parent, ignore_errors=True)
        spamd.render(own_home)
        clamd.render(own_home)
    finally:
        os.umask(old)
    site = spamd.site_dir(own_home)
    assert stat.S_IMODE(site.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in site.iterdir()} == {0o644}
    assert stat.S_IMODE(clamd.db_dir(own_home).parent.stat().st_mode) == 0o755

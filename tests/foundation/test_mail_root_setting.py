"""Setting mail.root: where the mailboxes live, refused clearly, followed by every user of it."""

from __future__ import annotations

import os
import stat

import pytest

from mailyard.home import Home
from mailyard.mda.config import Identity, render_text
from mailyard.services.apply_settings import bring_in_line, change_settings, store_values
from mailyard.services.privileges import mail_owner
from mailyard.settings.registry import setting
from mailyard.settings.types import SettingError
from mailyard.store.accounts import add_domain, add_mailbox
from mailyard.store.settings_store import load_settings


def test_the_default_is_empty_and_means_the_mail_folder_of_the_home(home: Home):
    assert setting("mail.root").default == ""
    assert load_settings(home)["mail.root"] == ""
    assert home.mail_dir == home.root / "mail"
    assert home.maildir("Fred@Example.test") == home.root / "mail/example.test/fred/Maildir"


def test_it_cascades_and_reloads_the_services_that_read_maildirs():
    spec = setting("mail.root")
    assert spec.cascade
    assert set(spec.services) == {"send", "pop3", "pop3s", "imap", "imaps"}
    assert "does not move" in spec.help


@pytest.mark.parametrize("value,fragment", [
    ("srv/mail", "must start with /"),
    ("/", "not / itself"),
    ("/srv/../etc", "no . or .."),
    ("/srv/./mail", "no . or .."),
    ("/srv/my mail", "no spaces"),
    ("/srv/mail/%d", "no %"),
    ("/srv/mail#x", "absolute directory path"),
    ("/srv/mail\n/etc", "absolute directory path"),
    ("/" + "m" * 250, "at most 200 characters"),
])
def test_refusals_name_the_setting_the_value_and_what_is_allowed(value, fragment):
    with pytest.raises(SettingError) as err:
        setting("mail.root").parse(value)
    message = str(err.value)
    assert message.startswith("mail.root: ")
    assert repr(value) in message
    assert fragment in message
    assert "/srv/mail" in message  # the example of what is allowed


@pytest.mark.parametrize("value,typed", [
    ("/srv/mail", "/srv/mail"), ("/srv//mail/", "/srv/mail"), ("  /srv/mail  ", "/srv/mail"),
    ("", ""), ("/mnt/nfs-1/mail_store", "/mnt/nfs-1/mail_store"),
])
def test_accepted_paths_are_written_back_plainly(value, typed):
    assert setting("mail.root").parse(value) == typed


def test_a_missing_root_is_created_for_the_mail_owner_and_used_from_then_on(home: Home):
    root = home.root.parent / "shared" / "mail"
    result = change_settings(home, {"mail.root": str(root)})
    assert result.problems == []
    assert root.is_dir()
    info = root.stat()
    assert (info.st_uid, info.st_gid) == mail_owner()
    assert stat.S_IMODE(info.st_mode) == 0o755
    assert home.mail_dir == root
    assert Home.find(home.root).mail_dir == root  # a fresh process reads it from the store


def test_a_long_running_process_creates_mailboxes_in_the_root_set_elsewhere(home: Home):
    """The panel keeps one Home for hours; a change made by the CLI (another process, here
    another Home object) must not leave its new mailboxes in the old root."""
    panel = Home.find(home.root)
    add_domain(panel, "example.test")
    add_mailbox(panel, "ann@example.test", "ann password 1")
    assert panel.maildir("ann@example.test").is_dir()  # in HOME/mail, and remembered
    root = home.root.parent / "moved"
    change_settings(Home.find(home.root), {"mail.root": str(root)})
    add_mailbox(panel, "bob@example.test", "bob password 1")
    assert (root / "example.test" / "bob" / "Maildir" / "new").is_dir()
    assert not (home.root / "mail" / "example.test" / "bob").exists()
    assert panel.mail_dir == root


def test_back_to_empty_is_back_to_the_home(home: Home):
    change_settings(home, {"mail.root": str(home.root.parent / "elsewhere")})
    change_settings(home, {"mail.root": ""})
    assert home.mail_dir == home.root / "mail"


def test_a_file_is_refused_and_nothing_is_stored(home: Home):
    target = home.root.parent / "a-file"
    target.write_text("not a directory\n")
    with pytest.raises(SettingError) as err:
        change_settings(home, {"mail.root": str(target)})
    assert str(err.value).startswith(f"mail.root: {str(target)!r} is not allowed;")
    assert "not a directory" in str(err.value)
    assert load_settings(home)["mail.root"] == ""


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="only root can make a directory the mail owner cannot write")
def test_an_existing_directory_the_mail_owner_cannot_write_is_refused_not_taken_over(
        home: Home):
    target = home.root.parent / "roots-only"
    target.mkdir(mode=0o755)  # root's, like an empty mount point
    with pytest.raises(SettingError) as err:
        change_settings(home, {"mail.root": str(target)})
    assert "not writable by the mail owner (mailyard)" in str(err.value)
    assert target.stat().st_uid == 0  # not chowned
    assert load_settings(home)["mail.root"] == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a directory unreachable")
def test_a_root_below_a_directory_the_mail_owner_cannot_enter_is_refused(home: Home):
    private = home.root.parent / "private"
    private.mkdir(mode=0o700)  # like pytest's own temporary root
    with pytest.raises(SettingError, match="not writable by the mail owner"):
        change_settings(home, {"mail.root": str(private / "mail")})


def test_a_node_applying_a_root_it_cannot_use_reports_the_problem(home: Home):
    """What a member does with a cascaded mail.root that is not usable there: the value stays
    (it is the cluster's), the problem is reported (and marked failed in `cluster changes`)."""
    target = home.root.parent / "not-a-dir"
    target.write_text("")
    store_values(home, {"mail.root": str(target)}, cascade=False)
    _, problems = bring_in_line(home, ["mail.root"])
    assert len(problems) == 1
    assert problems[0].startswith("mail.root: ") and "not a directory" in problems[0]
    assert home.mail_dir == target


IDENT = Identity(root=False, internal_user="u", internal_group="g", login_user="u",
                 mail_uid=1000, mail_gid=1000)


def _conf(home: Home) -> str:
    settings = load_settings(home)
    on = {name: True for name in ("pop3", "pop3s", "imap", "imaps")}
    return render_text(home, settings, on, IDENT, ipv6=False)


def test_dovecot_reads_the_mail_root_and_is_told_it_may_be_shared(home: Home):
    default = _conf(home)
    assert f"mail_home = {home.root / 'mail'}/%d/%n" in default
    assert "mmap_disable" not in default and "mail_fsync" not in default
    root = home.root.parent / "nfs-mail"
    change_settings(home, {"mail.root": str(root)})
    shared = _conf(home)
    assert f"mail_home = {root}/%d/%n" in shared
    assert "mmap_disable = yes" in shared and "mail_fsync = always" in shared
    assert "mail_nfs_storage" not in shared and "mail_nfs_index" not in shared


def test_a_node_joining_a_store_with_a_mail_root_prepares_it(home: Home):
    from mailyard.nodeinit import init_home

    root = home.root.parent / "joined-root"
    change_settings(home, {"mail.root": str(root)}, cascade=True)  # the cluster's value
    root.rmdir()  # as on a machine that has not got it yet
    second, _ = init_home(home.root.parent / "second", "mx2.example.test",
                          db_url=home.db_url, node_name="second")
    assert second.mail_dir == root and root.is_dir()
    assert (second.root / "mail").is_dir()  # the home's own folder is made all the same

"""Secrets stay out of other users' reach, and root never writes through the mail owner's links.

Issue 16, items 4 and 5. The mail owner (`mailyard`) and ClamAV's user own directories that
root writes into; a compromised process of theirs plants a symlink where root would write,
and root must neither follow it nor give away what it points at.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from home_audit import exposed, listing

from mailyard import safefs
from mailyard.home import Home
from mailyard.logs import LogDir
from mailyard.mailboxes import ensure_maildir
from mailyard.nodeinit import secure_home
from mailyard.services.privileges import MAIL_USER, chown_tree
from mailyard.store import accounts

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become the mail owner")


def as_mail_owner(*argv: str) -> None:
    """Run a command as the mail owner, as a compromised mail-owner process would."""
    subprocess.run(["runuser", "-u", MAIL_USER, "--", *argv], check=True)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-owned file outside the home, the target of every planted link."""
    target = tmp_path / "victim"
    target.write_text("root's\n")
    os.chmod(target, 0o600)
    return target


# ---- item 4: modes ----------------------------------------------------------------------------

def test_a_fresh_home_keeps_its_secrets_from_other_users(home: Home) -> None:
    problems = exposed(home.root)
    assert not problems, "\n".join(problems + ["", "listing:"]
                                   + [str(e) for e in listing(home.root)])
    modes = {e.rel: stat.S_IMODE(e.mode) for e in listing(home.root)}
    assert modes["mailyard.toml"] == 0o640
    # as root the store's group (the mail owner and the panel) opens it; run as one user, its own
    assert modes["db/store.sqlite"] == (0o660 if os.geteuid() == 0 else 0o600)
    assert modes["db"] == (0o2770 if os.geteuid() == 0 else 0o700)
    assert modes["tls/key.pem"] == 0o600


@needs_root
def test_the_mail_owner_reads_the_config_and_store_and_others_do_not(home: Home) -> None:
    accounts.add_domain(home, "example.test")
    as_mail_owner("cat", str(home.root / "mailyard.toml"))
    as_mail_owner("test", "-r", str(home.root / "db" / "store.sqlite"))
    nobody = subprocess.run(["runuser", "-u", "nobody", "--", "cat",
                             str(home.root / "mailyard.toml")], capture_output=True)
    assert nobody.returncode != 0


def test_secure_home_brings_an_old_home_in_line(home: Home) -> None:
    """A home made by an older version (everything 0644, log/ the mail owner's) is fixed at
    the next `up`, which runs secure_home."""
    for rel in ("mailyard.toml", "db/store.sqlite", "tls/key.pem"):
        os.chmod(home.root / rel, 0o644)
    (home.log_dir / "smtp" / "current").write_text("old line\n")
    os.chmod(home.log_dir / "smtp" / "current", 0o644)
    assert exposed(home.root)
    secure_home(home)
    assert not exposed(home.root)
    assert home.log_dir.stat().st_uid == os.geteuid()


# ---- item 5: no writes through links ----------------------------------------------------------

def test_safefs_write_file_replaces_a_planted_link_instead_of_following_it(
        tmp_path: Path, victim: Path) -> None:
    (tmp_path / "theirs").mkdir()
    os.symlink(victim, tmp_path / "theirs" / "user_prefs")
    safefs.write_file(tmp_path, "theirs/user_prefs", "score X 1\n", mode=0o600)
    assert victim.read_text() == "root's\n"
    assert not (tmp_path / "theirs" / "user_prefs").is_symlink()
    assert (tmp_path / "theirs" / "user_prefs").read_text() == "score X 1\n"


def test_safefs_refuses_a_directory_that_is_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "theirs").mkdir()
    os.symlink(elsewhere, tmp_path / "theirs" / "virtual")
    with pytest.raises(safefs.UnsafePath):
        safefs.write_file(tmp_path, "theirs/virtual/a/user_prefs", "x\n")
    assert list(elsewhere.iterdir()) == []


@needs_root
def test_spamd_user_prefs_are_not_written_through_a_link_the_mail_owner_planted(
        home: Home, victim: Path) -> None:
    from mailyard.filters import spamd

    accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, "ann@example.test", "ann password")
    spamd.render_users(home)
    user_dir = spamd.user_dir(home, "ann@example.test")
    assert user_dir.stat().st_uid == pwd.getpwnam(MAIL_USER).pw_uid
    # the mail owner replaces user_prefs (and a guessable temporary name) with links
    as_mail_owner("ln", "-sf", str(victim), str(user_dir / "user_prefs"))
    as_mail_owner("ln", "-sf", str(victim), str(user_dir / "user_prefs.tmp"))
    spamd.render_mailbox_prefs(home, "ann@example.test")
    assert victim.read_text() == "root's\n"
    assert victim.stat().st_uid == 0
    assert (user_dir / "user_prefs").is_file() and not (user_dir / "user_prefs").is_symlink()
    # and a whole mailbox directory swapped for a link to root's directory
    as_mail_owner("rm", "-rf", str(user_dir))
    as_mail_owner("ln", "-s", str(victim.parent), str(user_dir))
    with pytest.raises(safefs.UnsafePath):
        spamd.render_mailbox_prefs(home, "ann@example.test")
    assert not (victim.parent / "user_prefs").exists()


@needs_root
def test_giving_a_tree_to_the_mail_owner_does_not_give_away_a_links_target(
        home: Home, victim: Path) -> None:
    as_mail_owner("ln", "-s", str(victim), str(home.queue_dir / "planted"))
    as_mail_owner("mkdir", str(home.queue_dir / "sub"))
    as_mail_owner("ln", "-s", str(victim.parent), str(home.queue_dir / "sub" / "dir"))
    chown_tree(home.queue_dir)
    assert victim.stat().st_uid == 0
    assert victim.parent.stat().st_uid == 0


@needs_root
def test_maildir_creation_does_not_write_through_planted_links(
        home: Home, victim: Path) -> None:
    accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, "ann@example.test", "ann password")
    maildir = ensure_maildir(home, "ann@example.test", training=False)
    as_mail_owner("rm", "-f", str(maildir / "subscriptions"))
    as_mail_owner("ln", "-s", str(victim), str(maildir / "subscriptions"))
    as_mail_owner("rm", "-f", str(maildir / ".Spam" / "maildirfolder"))
    as_mail_owner("ln", "-s", str(victim.parent / "planted"),
                  str(maildir / ".Spam" / "maildirfolder"))
    ensure_maildir(home, "ann@example.test", training=True)
    assert victim.read_text() == "root's\n"
    assert not (victim.parent / "planted").exists()
    assert "Learn Spam" in (maildir / "subscriptions").read_text()
    assert (maildir / "subscriptions").stat().st_uid == pwd.getpwnam(MAIL_USER).pw_uid


@needs_root
def test_a_log_opened_by_root_is_not_written_through_a_planted_link(
        home: Home, victim: Path) -> None:
    log_dir = home.service_log_dir("smtp")
    as_mail_owner("ln", "-s", str(victim), str(log_dir / "current"))
    with pytest.raises(OSError):
        LogDir(log_dir)
    assert victim.read_text() == "root's\n"


@needs_root
def test_clamav_files_are_not_changed_through_planted_links(
        home: Home, victim: Path) -> None:
    from mailyard.filters import clamd

    ids = clamd.clamav_ids()
    if ids is None:
        pytest.skip("no clamav user here")
    clamd.render(home)
    for path in (clamd.log_file(home), clamd.db_dir(home) / clamd.LOCAL_DB_NAME):
        subprocess.run(["runuser", "-u", "clamav", "--", "ln", "-sf", str(victim), str(path)],
                       check=True)
    with pytest.raises(safefs.UnsafePath):
        clamd.render(home)
    clamd.install_local_signatures(home)
    assert victim.stat().st_uid == 0
    assert victim.read_text() == "root's\n"


@needs_root
def test_root_injecting_into_the_queue_never_follows_a_swapped_directory(
        home: Home, victim: Path) -> None:
    from mailyard.queue.envelope import Envelope
    from mailyard.queue.errors import QueueError
    from mailyard.queue.layout import Queue

    queue = Queue(home.queue_dir)
    with queue.open_message() as writer:  # a normal injection works
        writer.write(b"Subject: ok\r\n\r\nhello\r\n")
        writer.commit(Envelope(sender="a@example.org", recipients=["b@example.net"]))
    target = victim.parent / "planted-dir"
    target.mkdir()
    # the mail owner swaps tmp/ for a link to a directory of root's choosing
    as_mail_owner("mv", str(home.queue_dir / "tmp"), str(home.queue_dir / "tmp.real"))
    as_mail_owner("ln", "-s", str(target), str(home.queue_dir / "tmp"))
    with pytest.raises(QueueError):
        queue.open_message()
    assert list(target.iterdir()) == []


@needs_root
def test_root_taking_the_queue_lock_does_not_create_a_file_through_a_link(
        home: Home, victim: Path) -> None:
    from mailyard.queue.control import QueueLock, put_request
    from mailyard.queue.layout import Queue

    queue = Queue(home.queue_dir)
    lock_dir = home.queue_dir / "lock"
    as_mail_owner("ln", "-s", str(victim.parent / "made-by-root"), str(lock_dir / "sendmutex"))
    with pytest.raises(OSError):
        QueueLock(queue)
    assert not (victim.parent / "made-by-root").exists()
    as_mail_owner("rm", str(lock_dir / "sendmutex"))
    # a request is written through lock/'s descriptor; a file in the FIFO's place is left alone
    as_mail_owner("rm", str(lock_dir / "trigger"))
    as_mail_owner("ln", "-s", str(victim), str(lock_dir / "trigger"))
    put_request(queue, "flush")
    assert victim.read_text() == "root's\n"


@needs_root
def test_training_run_by_root_reads_no_file_a_link_or_swapped_folder_leads_to(
        home: Home, victim: Path) -> None:
    from mailyard.filters import training
    from mailyard.mailboxes import folder_dir

    accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, "ann@example.test", "ann password")
    maildir = ensure_maildir(home, "ann@example.test", training=True)
    learn = folder_dir(maildir, "Learn Spam")
    as_mail_owner("ln", "-s", str(victim), str(learn / "cur" / "1.M1.x:2,S"))
    assert training.folder_messages(learn) == []  # a link is not a message
    # cur/ swapped for a link to root's directory: its files are not the mail owner's
    as_mail_owner("rm", "-rf", str(learn / "cur"))
    as_mail_owner("ln", "-s", str(victim.parent), str(learn / "cur"))
    found = training.folder_messages(learn)
    assert victim in [p.resolve() for p in found]
    with pytest.raises(training.NotAMessage):
        training.read_message(learn / "cur" / victim.name)


@needs_root
def test_sendmail_queues_directly_for_root_and_the_mail_owner_only(home: Home) -> None:
    """Everyone else goes through the node's sendmail service (docs/limits.md): with none
    running here, a temporary failure that says so, and nothing read from the store."""
    import sys

    sendmail = str(Path(sys.executable).parent / "sendmail")
    message = b"Subject: modes\n\nhello\n"
    env = ["env", f"MAILYARD_HOME={home.root}"]
    for prefix in ([], ["runuser", "-u", MAIL_USER, "--"]):
        done = subprocess.run(prefix + env + [sendmail, "-f", "a@example.org",
                                               "b@example.net"], input=message,
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert len(list((home.queue_dir / "todo").iterdir())) == 2
    other = subprocess.run(["runuser", "-u", "nobody", "--"] + env + [sendmail, "b@example.net"],
                           input=message, capture_output=True, timeout=60)
    assert other.returncode == 75, other.stderr  # EX_TEMPFAIL: the caller may try again
    assert b"sendmail service" in other.stderr and b"Traceback" not in other.stderr
    assert len(list((home.queue_dir / "todo").iterdir())) == 2


def test_changing_owners_below_db_keeps_this_processs_sqlite_locks(home: Home) -> None:
    """Closing any real descriptor of a file drops the process's POSIX locks on it: a chown
    walk over db/ must not release the lock SQLite holds on the store in the same process."""
    import sqlite3
    import sys

    store = home.root / "db" / "store.sqlite"
    st = store.stat()
    conn = sqlite3.connect(store, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")  # a write lock, as a transaction in progress holds
        safefs.chown_tree(home.root, "db", st.st_uid, st.st_gid)
        safefs.chmod_file(home.root, "db/store.sqlite", 0o600)
        secure_home(home)
        other = subprocess.run(
            [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], "
             "timeout=0); c.execute('BEGIN IMMEDIATE')", str(store)],
            capture_output=True, text=True, timeout=60)
        assert other.returncode != 0 and "locked" in other.stderr, other
    finally:
        conn.rollback()
        conn.close()

"""Creating a node's home: directories, identity, store schema, TLS certificate, first admin."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from . import safefs
from .home import CONFIG_MODE, CONFIG_NAME, Home
from .mailboxes import MailRootError, prepare_mail_root
from .services.privileges import (
    MAIL_USER,
    PANEL_USER,
    chown_tree,
    ensure_mail_user,
    mail_owner,
    panel_owner,
    running_as_root,
    store_gid,
)
from .services.tls import make_self_signed
from .settings.registry import setting
from .store.accounts import (
    add_admin,
    add_domain,
    add_mailbox,
    count_admins,
    get_alias,
    get_mailbox,
    is_local_domain,
    split_address,
)
from .store.cache import refresh_cache
from .store.db import session_scope
from .store.models import SettingRow
from .store.settings_store import load_settings, set_many, set_setting


def give_store_to_mail_owner(home: Home) -> None:
    """An SQLite store lives in HOME/db/, a directory of root's that the group mailyard-store
    (the mail owner and the panel) may write: the SMTP and send services and the panel read
    and write the store without root, and SQLite needs to make its -wal/-shm files beside it.
    The files are the mail owner's; root's own writes keep that ownership (SQLite gives new
    -wal/-shm files the store's owner and mode), the setgid directory gives them its group."""
    if home.db_url.startswith("sqlite:///"):
        _private_store(Path(home.db_url[len("sqlite:///"):]).parent, _store_owner())


# What holds secrets, and who may read it (issue 16, item 4). The store holds every password
# hash and the panel's sessions; root, the mail owner (the services, sendmail) and the panel
# use it. As root: db/ root:mailyard-store 2770 (setgid, so every file made in it gets the
# group), the files mailyard:mailyard-store 0660; nothing for other users. Run as one user,
# that user's alone.
STORE_DIR_MODE = 0o2770
STORE_FILE_MODE = 0o660
OWN_STORE_DIR_MODE = 0o700
OWN_STORE_FILE_MODE = 0o600
TLS_DIR_MODE = 0o700
TLS_KEY_MODE = 0o600
LOG_DIR_MODE = 0o755  # root's: the services' own directories below it are the mail owner's
OWN_LOG_DIR_MODE = 0o750
# Bits no log file or directory keeps: group write, everything for other users.
LOG_REMOVED_BITS = 0o027
# What the panel (as mailyard-panel) writes itself: the queue graphs' round-robin database.
PANEL_STATE = "var/rrd"
PANEL_STATE_MODE = 0o750
MANAGER_TOKEN = "etc/cluster/manager-token"  # cluster.manager_token.token_path
# Services that write their own logs (after dropping root) and the daily Bayes training.
MAIL_OWNER_LOGS: tuple[str, ...] = ("smtp", "submission", "send", "spam-train")
MAIL_OWNER_LOGS += ("sendmail",)  # issue 19: the sendmail service's own log


def secure_home(home: Home) -> None:
    """Give the home's secrets their modes and owners; run at init and before every `up`
    (so a home made by an older version is brought in line too).

    mailyard.toml 0640 root:mailyard-store, the SQLite store's directory root:mailyard-store
    2770 and its files 0660 (the mail owner's and the panel's, see STORE_DIR_MODE), the TLS
    key root's alone (0600), log files 0640 in a log directory root owns, with the services'
    own subdirectories given to the mail owner."""
    root = running_as_root()
    owner = mail_owner() if root else None
    config = home.root / CONFIG_NAME
    if root:
        os.chown(config, 0, _store_owner()[1], follow_symlinks=False)  # type: ignore[index]
    os.chmod(config, CONFIG_MODE)  # in the home, which is root's: no one else's link
    # HOME/db holds the SQLite store, or on PostgreSQL the node's local cache of it
    places = {home.root / "db"}
    if home.db_url.startswith("sqlite:///"):
        places.add(Path(home.db_url[len("sqlite:///"):]).parent)
    for place in places:
        _private_store(place, _store_owner())
    os.chmod(home.tls_dir, TLS_DIR_MODE)
    if home.key_file.exists():
        safefs.chmod_file(home.root, "tls/key.pem", TLS_KEY_MODE, (0, 0) if root else None)
    _private_logs(home, owner)
    _panel_state(home)




def _panel_state(home: Home) -> None:
    """var/rrd is the panel's (var/ is root's, so no one else can put a link in its place)."""
    if not running_as_root():
        return
    uid, gid = panel_owner()
    safefs.mkdirs(home.root, PANEL_STATE, PANEL_STATE_MODE, (uid, gid))
    safefs.chown_tree(home.root, PANEL_STATE, uid, gid)
    # the manager's node token, which the panel sends for cascaded actions (an older home's
    # was root's alone); etc/ is root's
    if (home.root / MANAGER_TOKEN).is_file():
        safefs.chown(home.root, str(Path(MANAGER_TOKEN).parent), 0, gid, mode=0o750)
        safefs.chmod_file(home.root, MANAGER_TOKEN, 0o640, (0, gid))


def _store_owner() -> tuple[int, int] | None:
    """(uid of the store's files, gid of the store group) as root; None when run as one user."""
    return (mail_owner()[0], store_gid()) if running_as_root() else None


def _private_store(directory: Path, owner: tuple[int, int] | None) -> None:
    """The store's directory and files: see STORE_DIR_MODE (`owner` is (file uid, group))."""
    if not directory.is_dir():
        return
    base, name = directory.parent, directory.name
    with safefs.directory(base, name) as dfd:
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
        try:
            names = os.listdir(listing)
        finally:
            os.close(listing)
    if owner is not None:
        safefs.chown(base, name, 0, owner[1], mode=STORE_DIR_MODE)
    else:
        os.chmod(directory, OWN_STORE_DIR_MODE)
    file_mode = STORE_FILE_MODE if owner is not None else OWN_STORE_FILE_MODE
    for entry in names:
        if (directory / entry).is_file() and not (directory / entry).is_symlink():
            safefs.chmod_file(base, f"{name}/{entry}", file_mode, owner)


def _private_logs(home: Home, owner: tuple[int, int] | None) -> None:
    log_dir = home.log_dir
    if owner is not None:
        os.chown(log_dir, 0, 0, follow_symlinks=False)  # a home from before: log/ was the owner's
    os.chmod(log_dir, LOG_DIR_MODE)
    for name in MAIL_OWNER_LOGS:
        safefs.mkdirs(log_dir, name, OWN_LOG_DIR_MODE, owner)
    safefs.restrict_tree(home.root, "log", LOG_REMOVED_BITS)
    os.chmod(log_dir, LOG_DIR_MODE)  # root's directory itself stays traversable


# ---- can every service user reach what it needs? (issue 16, item 3) -----------------------------

# A directory check run as another user is one `test` per directory; it cannot take long.
REACH_CHECK_TIMEOUT_SECONDS = 30.0
# Who reaches what below the home, as root: (service, user, places below HOME).
SERVICE_REACH: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("smtp, submission, send, spamd and the mailboxes", MAIL_USER,
     ("queue", "db", "mail", "log/smtp", "var/spamassassin")),
    ("clamd and freshclam", "clamav", ("var/clamav/tmp", "var/clamav/db", "log/clamav")),
    ("Dovecot's internal processes", "dovecot", ("run",)),
    ("the panel", PANEL_USER, ("db", "run", PANEL_STATE)),
)


# Who is asked in the mail owner's place before init has created it.
STAND_IN_USER = "nobody"


class HomeUnreachable(RuntimeError):
    """A service user cannot reach a directory it needs; the message names both and the fix."""


def _blocked_directory(user: str, dirs: list[Path]) -> Path | None:
    """The first of `dirs` that `user` may not search (access(2) as that user, so ACLs count),
    None when it may search them all."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        if user not in (MAIL_USER, PANEL_USER):
            return None  # that daemon is not installed here: nothing of it will run
        # init is about to create the mail owner and the panel's user, in no group of anyone
        # else's: they will reach what the unprivileged `nobody` reaches
        entry = pwd.getpwnam(STAND_IN_USER)
    script = 'for d; do test -x "$d" || { printf %s "$d"; exit 1; }; done'
    try:
        done = subprocess.run(["sh", "-c", script, "sh", *map(str, dirs)], user=entry.pw_uid,
                              group=entry.pw_gid,
                              extra_groups=os.getgrouplist(user, entry.pw_gid),
                              capture_output=True, text=True,
                              timeout=REACH_CHECK_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return dirs[-1] if dirs else None
    return Path(done.stdout) if done.returncode else None


def _existing_chain(path: Path) -> list[Path]:
    """/ and every directory down to `path` that exists (the rest is made by us, 0755)."""
    chain = [p for p in reversed(path.parents)] + [path]
    return [p for p in chain if p.is_dir()]


def reach_problems(root: Path) -> list[str]:
    """What a service user cannot reach in a home at `root` (made or still to be made), each
    with the path, the user and the fix; empty when not root (every service then runs as us)."""
    if not running_as_root():
        return []
    root = Path(root).absolute()
    problems = []
    for service, user, places in SERVICE_REACH:
        for place in places:
            target = root / place
            blocked = _blocked_directory(user, _existing_chain(target))
            if blocked is None:
                continue
            try:
                st = blocked.stat()
                owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
                what = f"{blocked} is {stat.filemode(st.st_mode)} {owner}"
            except (OSError, KeyError):
                what = f"{blocked} cannot be searched"
            problems.append(
                f"{service} run as user {user}, which cannot reach {target}: {what}. "
                f"Fix: `chmod o+x {blocked}` (search only, no listing), or make the home "
                "in a directory every service user can reach (e.g. /srv/mailyard)")
            break  # one line per user: the same parent blocks the others
    return problems


def check_reach(root: Path) -> None:
    """Refuse (HomeUnreachable) a home some service user cannot reach; see reach_problems."""
    problems = reach_problems(root)
    if problems:
        raise HomeUnreachable("the node's services cannot reach their files:\n  "
                              + "\n  ".join(problems))


def prepare_own_mail_root(home: Home) -> None:
    """A node joining a store whose mail.root names another directory (a shared one, usually)
    makes sure it can use it: created when missing, else checked, never chowned wholesale,
    since other nodes' mail is in it. A problem is printed, not fatal: init must finish, and
    the root may be a filesystem that is mounted later."""
    root = home.mail_dir
    if root == home.default_mail_dir:
        return
    try:
        prepare_mail_root(root)
    except MailRootError as exc:
        print(f"warning: mail.root: {exc}", file=sys.stderr)


def init_home(root: Path, hostname: str, port_base: int = 0, db_url: str | None = None,
              node_name: str = "node1") -> tuple[Home, str | None]:
    """Create (or complete) a home. Returns it and the first admin's password when one was
    made now (shown once, never stored in clear)."""
    hostname = setting("server.hostname").parse(hostname)
    root = Path(root).absolute()
    home = Home(root=root, db_url=db_url or f"sqlite:///{root / 'db' / 'store.sqlite'}",
                port_base=port_base, node_name=node_name)
    home.make_dirs()
    home.write_config()
    # Alembic (with Mako and Pygments) only when a store is made or upgraded: the services
    # import this module for its home checks and never migrate.
    from .store.migrate import migrate

    migrate(home.db_url)
    with session_scope(home.db_url) as s:
        stored = s.get(SettingRow, {"key": "server.hostname", "node": ""})
        cluster_hostname = stored.value if stored is not None else None
    if cluster_hostname is None:
        set_many(home, {"server.hostname": hostname, "server.default_domain": hostname})
    elif cluster_hostname != hostname:
        # Another node made this (shared) store: the hostname names this node alone.
        set_setting(home, "server.hostname", hostname, node_only=True)
    if not home.cert_file.exists() or not home.key_file.exists():
        make_self_signed(home.cert_file, home.key_file, hostname)

    ensure_mail_user()
    for owned in (home.queue_dir, home.default_mail_dir):
        chown_tree(owned)
    prepare_own_mail_root(home)
    give_store_to_mail_owner(home)
    password = None
    if count_admins(home) == 0:
        password = secrets.token_urlsafe(15)
        add_admin(home, "admin", password)

    refresh_cache(home)  # a node on a shared store has its local copy from the start
    secure_home(home)
    return home, password


def setup_postmaster(home: Home, address: str | None = None) -> tuple[str, bool]:
    """Give postmaster mail (RFC 5321 4.5.1) and double bounces a real mailbox of this node.

    `address` is the administrator's choice (`mailyard init --postmaster`); without one, a home
    that has none yet gets postmaster@<hostname>. Its domain becomes a local domain and the
    mailbox is created if neither it nor an alias of that name exists (with a random password
    nobody knows: set one with `mailyard mailbox passwd`). Settings server.postmaster and the
    double bounce address then name it. Returns the address and whether a mailbox was made."""
    settings = load_settings(home)
    if address is None and settings["server.postmaster"]:
        return str(settings["server.postmaster"]), False  # set up before: keep it
    target = setting("server.postmaster").parse(
        address or f"postmaster@{settings['server.hostname']}")
    local, domain = split_address(target)
    target = f"{local}@{domain}"
    if not is_local_domain(home, domain):
        add_domain(home, domain)
    made = False
    if get_mailbox(home, target) is None and get_alias(home, target) is None:
        add_mailbox(home, target, secrets.token_urlsafe(24))
        made = True
    set_many(home, {"server.postmaster": target, "bounce.double_to": local,
                    "bounce.double_host": domain})
    return target, made

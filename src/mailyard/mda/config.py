"""The text of dovecot.conf: a pure function of the node, its settings and its listener states.

Four logical services, one Dovecot. Dovecot's own `imap-login`/`imap` and `pop3-login`/`pop3`
services carry the plain listeners (with STARTTLS); the secure listeners get services of
their own, `imaps-login`/`imaps` and `pop3s-login`/`pop3s`, running the same binaries. A login
process started as `imap-login -l imaps` hands logged-in clients to the socket `login/imaps`,
which belongs to the `imaps` service, so each of the four has its own process and memory
limits, exactly as the guide's four MDA boxes have. A switched-off listener is rendered with
port 0 (Dovecot's "no listener"), so a reload closes it while the others keep serving.

Connection caps (setting `<service>.max_connections`, N):

- the mail service (`imap`, `imaps`, `pop3`, `pop3s`) runs one process per logged-in client
  with `process_limit = N`: at most N clients are served at once. The login that would be
  client N+1 is held while Dovecot waits for a free process (10 s, fixed in Dovecot's master)
  and then closed: refused, not queued forever;
- the login service runs in Dovecot's high-performance mode (`service_count = 0`) with room for
  the N sessions it proxies TLS for plus as many connections still logging in (at least
  MIN_PRELOGIN_SLOTS). When every slot is taken, a new connection pushes out the oldest one
  that has not logged in yet ("Connection queue full"), so idle connections cannot lock out
  the users who want to log in.

Memory (setting `<service>.memory_limit_mb`) is Dovecot's `vsz_limit` on both the login and
the mail processes of that service.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..services import certificates
from ..settings.registry import value
from ..store.away import store_marked_away

if TYPE_CHECKING:
    from ..home import Home


@dataclass(frozen=True)
class ListenerSpec:
    name: str  # the mailyard service, also the inet_listener's name
    protocol: str  # imap or pop3
    login_service: str
    mail_service: str
    implicit_tls: bool
    builtin: bool  # Dovecot's own service blocks (only limits and listeners are set)


SPECS: dict[str, ListenerSpec] = {s.name: s for s in (
    ListenerSpec("pop3", "pop3", "pop3-login", "pop3", False, True),
    ListenerSpec("pop3s", "pop3", "pop3s-login", "pop3s", True, False),
    ListenerSpec("imap", "imap", "imap-login", "imap", False, True),
    ListenerSpec("imaps", "imap", "imaps-login", "imaps", True, False),
)}

# Dovecot's built-in login services carry both listeners of their protocol by default; the
# secure one moves to our own service, so it is switched off in the built-in one.
_BUILTIN_SECURE_LISTENER = {"imap-login": "imaps", "pop3-login": "pop3s"}

# Connections a login process keeps room for beyond the N it proxies TLS for: clients that are
# still greeting, starting TLS or authenticating. Dovecot's own default is 1000 per process;
# N (at least this many) keeps a flood of idle connections from costing memory without limit.
MIN_PRELOGIN_SLOTS = 16

# Login processes per login service in high-performance mode. Dovecot's advice is one per CPU
# core; more than 4 buys nothing on the small nodes this runs on and costs ~3 MB each.
MAX_LOGIN_PROCESSES = 4
LOGIN_PROCESSES = max(1, min(os.cpu_count() or 1, MAX_LOGIN_PROCESSES))

# Processes that check passwords at once. Each argon2id check (store/passwords.py) takes 64 MiB
# and a core for ~0.1 s, so more workers than cores only add memory: Dovecot's default of 100
# would let a burst of logins take 6 GB. Logins beyond this wait in the auth process's queue.
MAX_AUTH_WORKERS = 8
AUTH_WORKERS = max(2, min(os.cpu_count() or 1, MAX_AUTH_WORKERS))

# Client connections Dovecot's internal services (auth, anvil, stats, log, config) accept: each
# login and mail process holds some of them. Dovecot's default, 1000, is kept as the floor;
# above it every process that may exist gets one, plus room for doveadm and auth workers.
INTERNAL_CLIENT_FLOOR = 1000
INTERNAL_CLIENT_SPARE = 200


# Characters a path may have to be written into Dovecot's configuration unquoted: its parser
# treats # as a comment and quotes specially, and ssl_cert's "<file" form cannot be quoted.
_SAFE_PATH = re.compile(r"[A-Za-z0-9_.,:/@+=%~-]+")

# Unix socket paths are limited to 108 bytes (sun_path, with its NUL); the longest socket
# Dovecot 2.3 creates below base_dir is "token-login/imap-urlauth". Dovecot does not start
# when a socket path is longer, so base_dir is kept short: HOME/var/dovecot itself.
SUN_PATH_MAX = 107
LONGEST_SOCKET = "/token-login/imap-urlauth"


def _sni_blocks(home: Home) -> list[str]:
    """A `local_name` block per hosted domain's certificate (mailyard tls install --domain):
    Dovecot answers a client that asks for that name with it (SNI)."""
    out = []
    for cert in certificates.installed(home.tls_dir):
        if cert.name == "node":
            continue
        where = home.tls_dir / certificates.DOMAINS_DIR / cert.name
        names = " ".join(n for n in cert.names if _SAFE_PATH.fullmatch(n))
        if not names:
            continue
        out += [f"local_name {names} {{",
                f"  ssl_cert = <{safe_path(where / certificates.CERT_NAME, 'a certificate')}",
                f"  ssl_key = <{safe_path(where / certificates.KEY_NAME, 'a key')}", "}"]
    return out


class DovecotConfigError(ValueError):
    """The node cannot be expressed as a Dovecot configuration; the message says why."""


@dataclass(frozen=True)
class Identity:
    """Who Dovecot's processes run as: root drops to Dovecot's own users, others stay."""

    root: bool
    internal_user: str  # auth, anvil, stats
    internal_group: str
    login_user: str  # the network-facing login processes
    mail_uid: int  # the owner of the Maildirs (mailyard's mail owner)
    mail_gid: int


@dataclass(frozen=True)
class Paths:
    base_dir: Path  # sockets and master.pid
    state_dir: Path
    sql_conf: Path
    # Where Dovecot reads accounts on a cluster node while the store is away: the local cache.
    cache_sql_conf: Path


def paths(home: Home) -> Paths:
    return Paths(base_dir=home.var_dir / "dovecot", state_dir=home.var_dir / "dovecot-state",
                 sql_conf=home.etc_dir / "dovecot" / "dovecot-sql.conf.ext",
                 cache_sql_conf=home.etc_dir / "dovecot" / "dovecot-cache-sql.conf.ext")


def conf_path(home: Home) -> Path:
    return home.etc_dir / "dovecot" / "dovecot.conf"


def safe_path(path: Path, what: str) -> str:
    text = str(path)
    if not _SAFE_PATH.fullmatch(text):
        raise DovecotConfigError(f"{what} {text!r} has characters Dovecot's configuration "
                                 "cannot carry; use a node home whose path has only letters, "
                                 "digits and _.,:/@+=%~-")
    return text


def _check_base_dir(base_dir: Path) -> None:
    longest = len(str(base_dir)) + len(LONGEST_SOCKET)
    if longest > SUN_PATH_MAX:
        raise DovecotConfigError(
            f"the node home's path is too long for Dovecot's sockets: {base_dir} makes socket "
            f"paths of {longest} bytes, unix sockets allow {SUN_PATH_MAX}; move the home to a "
            f"path at least {longest - SUN_PATH_MAX} characters shorter")


def _instance_name(node_name: str) -> str:
    return "mailyard-" + re.sub(r"[^A-Za-z0-9_.-]", "_", node_name)


def listen_addresses(ipv6: bool) -> str:
    """Every IPv4 address, and every IPv6 one when this machine has IPv6."""
    return "*, ::" if ipv6 else "*"


def login_client_limit(max_connections: int) -> int:
    return max_connections + max(max_connections, MIN_PRELOGIN_SLOTS)


def internal_client_limit(settings: dict[str, Any]) -> int:
    processes = 0
    for spec in SPECS.values():
        processes += LOGIN_PROCESSES + int(settings[f"{spec.name}.max_connections"])
    return max(INTERNAL_CLIENT_FLOOR, processes + INTERNAL_CLIENT_SPARE)


def _service_blocks(home: Home, settings: dict[str, Any], on: dict[str, bool],
                    ident: Identity) -> list[str]:
    out: list[str] = []
    for spec in SPECS.values():
        cap = int(settings[f"{spec.name}.max_connections"])
        memory = int(settings[f"{spec.name}.memory_limit_mb"])
        port = home.port(spec.name, settings) if on[spec.name] else 0
        out.append(f"# {spec.name}: {'on' if on[spec.name] else 'off'}, "
                   f"at most {cap} clients, {memory} MB per process")
        out.append(f"service {spec.login_service} {{")
        if not spec.builtin:
            out += [f"  executable = {spec.protocol}-login -l {spec.mail_service}",
                    "  type = login",
                    f"  protocol = {spec.protocol}",
                    "  user = $default_login_user"]
        if not spec.builtin or not ident.root:
            # The login chroot needs root; unprivileged, the processes stay where they are.
            out.append(f"  chroot = {'login' if ident.root else ''}")
        out += [f"  inet_listener {spec.name} {{",
                f"    port = {port}"]
        if spec.implicit_tls:
            out.append("    ssl = yes")
        out.append("  }")
        secure = _BUILTIN_SECURE_LISTENER.get(spec.login_service)
        if secure:
            out += [f"  inet_listener {secure} {{", "    port = 0", "  }"]
        out += ["  service_count = 0",
                f"  process_limit = {LOGIN_PROCESSES}",
                f"  process_min_avail = {LOGIN_PROCESSES if on[spec.name] else 0}",
                f"  client_limit = {login_client_limit(cap)}",
                f"  vsz_limit = {memory} M",
                "}",
                f"service {spec.mail_service} {{"]
        if not spec.builtin:
            out += [f"  executable = {spec.protocol}",
                    f"  protocol = {spec.protocol}",
                    "  extra_groups = $default_internal_group",
                    f"  unix_listener login/{spec.mail_service} {{",
                    "    mode = 0666",
                    "  }"]
        out += [f"  process_limit = {cap}",
                "  client_limit = 1",
                "  service_count = 1",
                f"  vsz_limit = {memory} M",
                "}",
                ""]
    return out


def _account_sources(home: Home, sql_conf: str, cache_sql_conf: str) -> list[str]:
    """passdb and userdb: the store, or on a cluster node whose store is away, the node's
    local cache of it (mailyard.store.cache; the agent switches it with the marker of
    mailyard.store.away and reloads Dovecot).

    One source at a time, not a chain of both: with pgsql and sqlite side by side Dovecot
    2.3.19's auth-worker crashes (signal 11) when PostgreSQL cannot be reached, and its pgsql
    pool holds each query up to 60 seconds while it reconnects, which a login cannot wait
    for."""
    source = cache_sql_conf if store_marked_away(home) else sql_conf
    return ["passdb {", "  driver = sql", f"  args = {source}", "}",
            "userdb {", "  driver = sql", f"  args = {source}", "}"]


# With a mail root of its own (setting mail.root), the mail is taken to be on storage that
# several nodes may share (NFS or a cluster filesystem). Dovecot 2.3's advice for that case:
# no mmap of the index files (their changes are not seen across machines) and fsync after
# every write. mail_nfs_storage/mail_nfs_index stay off, as that advice also says: they flush
# NFS caches and still do not make two servers working on one user safe; each user is sent
# to one IMAP/POP3 node at a time instead (docs/cluster.md).
SHARED_STORAGE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("mmap_disable", "yes"),
    ("mail_fsync", "always"),
)


def _shared_storage_lines(settings: dict[str, Any]) -> list[str]:
    if not settings.get("mail.root"):
        return []
    return ["# the mail root may be shared with other nodes (setting mail.root)",
            *(f"{name} = {value}" for name, value in SHARED_STORAGE_SETTINGS)]


def render_text(home: Home, settings: dict[str, Any], on: dict[str, bool], ident: Identity,
                ipv6: bool) -> str:
    """dovecot.conf for `home` with `settings`; `on` says which listeners are switched on."""
    p = paths(home)
    _check_base_dir(p.base_dir)
    base_dir = safe_path(p.base_dir, "Dovecot's base directory")
    mail_dir = safe_path(home.mail_root_in(settings), "the mail root (setting mail.root)")
    cert = safe_path(home.cert_file, "the TLS certificate")
    key = safe_path(home.key_file, "the TLS key")
    sql_conf = safe_path(p.sql_conf, "the SQL configuration")
    delay = int(value(settings, "mda.auth_failure_delay"))
    lines = [
        "# generated by mailyard from the store: do not edit, use `mailyard settings` and",
        "# `mailyard service` instead (see docs/mda.md)",
        f"instance_name = {_instance_name(home.node_name)}",
        f"base_dir = {base_dir}",
        f"state_dir = {safe_path(p.state_dir, 'the Dovecot state directory')}",
        "log_path = /dev/stderr",
        "info_log_path = /dev/stderr",
        "debug_log_path = /dev/stderr",
        'log_timestamp = "%Y-%m-%d %H:%M:%S "',
        "protocols = imap pop3",
        f"listen = {listen_addresses(ipv6)}",
        "verbose_proctitle = yes",
        "shutdown_clients = yes",
        "login_greeting = mailyard ready.",
        "",
        "# who the processes run as",
        f"default_internal_user = {ident.internal_user}",
        f"default_internal_group = {ident.internal_group}",
        f"default_login_user = {ident.login_user}",
        f"default_client_limit = {internal_client_limit(settings)}",
        f"mail_uid = {ident.mail_uid}",
        f"mail_gid = {ident.mail_gid}",
        f"first_valid_uid = {ident.mail_uid}",
        f"last_valid_uid = {ident.mail_uid}",
        f"first_valid_gid = {ident.mail_gid}",
        f"last_valid_gid = {ident.mail_gid}",
        "",
        "# mail: Maildir++ under mail/<domain>/<user>, shared with local delivery",
        f"mail_home = {mail_dir}/%d/%n",
        "mail_location = maildir:~/Maildir",
        *_shared_storage_lines(settings),
        "namespace inbox {",
        "  inbox = yes",
        "  separator = .",
        "  mailbox Sent {",
        "    special_use = \\Sent",
        "  }",
        "  mailbox Drafts {",
        "    special_use = \\Drafts",
        "  }",
        "  mailbox Trash {",
        "    special_use = \\Trash",
        "  }",
        "  mailbox Spam {",
        "    special_use = \\Junk",
        "  }",
        "}",
        "",
        "# authentication against the store (see dovecot-sql.conf.ext)",
        "auth_mechanisms = plain login",
        "auth_username_format = %Lu",
        f"auth_failure_delay = {delay} secs",
        "disable_plaintext_auth = yes",
        *_account_sources(home, sql_conf, safe_path(p.cache_sql_conf, "the cache's SQL "
                                                    "configuration")),
        "",
        "# TLS: implicit on pop3s and imaps, STARTTLS on pop3 and imap",
        "ssl = yes",
        f"ssl_cert = <{cert}",
        f"ssl_key = <{key}",
        "ssl_min_protocol = TLSv1.2",
        *_sni_blocks(home),
        "",
        "# quotas: the Maildir++ maildirsize that delivery keeps too (mailyard.quota); the",
        "# limit of each mailbox comes from the store (quota_rule of the user query)",
        "mail_plugins = $mail_plugins quota",
        "protocol imap {",
        "  mail_plugins = $mail_plugins imap_quota",
        "}",
        "plugin {",
        "  quota = maildir:User quota",
        "  quota_rule = *:storage=0",
        "}",
        "",
    ]
    lines += _service_blocks(home, settings, on, ident)
    lines += ["service auth-worker {", f"  process_limit = {AUTH_WORKERS}", "}", ""]
    if not ident.root:
        lines += ["service anvil {", "  chroot = ", "}", ""]
    networks = list(settings.get("mda.plaintext_networks") or [])
    if networks:
        lines.append("# plaintext logins without TLS only from these networks")
    for network in networks:
        if not re.fullmatch(r"[0-9A-Fa-f:./]+", str(network)):
            raise DovecotConfigError(f"plaintext network {network!r} is not a network")
        lines += [f"remote {network} {{", "  disable_plaintext_auth = no", "}"]
    return "\n".join(lines) + "\n"

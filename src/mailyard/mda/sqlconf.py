"""How Dovecot reads mailyard's store: its SQL driver settings (dovecot-sql.conf.ext).

Dovecot checks passwords and finds users by querying the store itself, so there is no copy of
the accounts that could go stale: a password change counts at the next login, a removed or
deactivated mailbox cannot log in, with no reload. The node's store URL (mailyard.toml) is
translated here into Dovecot's driver and connect string:

- `sqlite:////abs/path/store.sqlite` -> `driver = sqlite`, `connect = /abs/path/store.sqlite`
  (package dovecot-sqlite). SQLite queries block, so Dovecot runs them in its auth-worker
  processes; see docs/mda.md for who may open the file.
- `postgresql://user:password@host:port/dbname?sslmode=...` -> `driver = pgsql` and a libpq
  connect string (package dovecot-pgsql).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

# The queries, on the `mailboxes` table of the store (see store/models.py). `active` is a
# boolean in PostgreSQL and 1/0 in SQLite; a bare `AND active` is true for both. Dovecot
# escapes %u for the driver before it substitutes it. Addresses are stored lowercased and
# Dovecot lowercases the login name (auth_username_format = %Lu), so they compare exactly.
PASSWORD_QUERY = ("SELECT address AS user, password_hash AS password FROM mailboxes "
                  "WHERE address = '%u' AND active")
# quota_rule: the mailbox's quota for Dovecot's quota plugin (storage=0 means no limit); the
# same maildirsize our delivery keeps (mailyard.quota).
USER_QUERY = ("SELECT address AS user, '*:storage=' || quota_mb || 'M' AS quota_rule "
              "FROM mailboxes WHERE address = '%u' AND active")
ITERATE_QUERY = "SELECT address AS user FROM mailboxes WHERE active"

# Hashes in the store carry their scheme ({ARGON2ID}...); this only names the scheme Dovecot
# would assume for a hash without one.
DEFAULT_PASS_SCHEME = "ARGON2ID"

# libpq connect-string keywords a store URL's query part may carry through to Dovecot.
_PG_PASSTHROUGH = frozenset({
    "host", "hostaddr", "port", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl",
    "connect_timeout", "application_name", "target_session_attrs", "options",
    "gssencmode", "channel_binding", "passfile", "service",
})


class StoreUrlError(ValueError):
    """A store URL Dovecot cannot use; the message says which and what is allowed."""


@dataclass(frozen=True)
class SqlDriver:
    driver: str  # "sqlite" or "pgsql"
    connect: str  # the value of `connect =`, already safe to write on one config line


def _conninfo_value(value: str) -> str:
    """A libpq connect-string value, single-quoted when it must be (libpq's own rules).

    Single quotes also keep a `#` from being read as a comment by Dovecot's config parser."""
    if value and re.fullmatch(r"[A-Za-z0-9_.,:/@+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def driver_for(db_url: str) -> SqlDriver:
    """Dovecot's SQL driver and connect string for a store URL, or StoreUrlError."""
    if any(c in db_url for c in "\r\n\x00"):
        raise StoreUrlError("the store URL contains a line break or NUL; Dovecot's "
                            "configuration cannot carry it")
    scheme = db_url.split("://", 1)[0].lower() if "://" in db_url else ""
    if scheme.startswith("sqlite"):
        return _sqlite(db_url)
    if scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return _pgsql(db_url)
    raise StoreUrlError(f"store URL {db_url.split('://', 1)[0]}://… is neither SQLite "
                        "(sqlite:////absolute/path) nor PostgreSQL (postgresql://…); Dovecot "
                        "reads only those two")


def _sqlite(db_url: str) -> SqlDriver:
    rest = db_url.split("://", 1)[1]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        raise StoreUrlError(f"store URL {db_url!r} names no SQLite file; Dovecot needs one "
                            "(sqlite:////absolute/path/store.sqlite)")
    path = unquote(rest[1:].split("?", 1)[0])
    if not path.startswith("/"):
        raise StoreUrlError(f"store URL {db_url!r} has a relative path; Dovecot runs in its "
                            "own directory and needs an absolute one (four slashes)")
    if not re.fullmatch(r"[A-Za-z0-9_.,:/@+=%~-]+", path):
        raise StoreUrlError(f"SQLite path {path!r} has characters Dovecot's configuration "
                            "cannot carry unquoted; allowed are letters, digits and _.,:/@+=%~-")
    return SqlDriver("sqlite", path)


def _pgsql(db_url: str) -> SqlDriver:
    parts = urlsplit(db_url)
    params: list[tuple[str, str]] = []
    try:
        port = parts.port
    except ValueError:
        raise StoreUrlError(f"store URL has a port that is not a number: {parts.netloc!r}"
                            ) from None
    if parts.hostname:
        params.append(("host", parts.hostname))
    if port:
        params.append(("port", str(port)))
    dbname = unquote(parts.path.lstrip("/"))
    if dbname:
        params.append(("dbname", dbname))
    if parts.username:
        params.append(("user", unquote(parts.username)))
    if parts.password is not None:
        params.append(("password", unquote(parts.password)))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _PG_PASSTHROUGH:
            raise StoreUrlError(f"store URL parameter {key!r} is not one Dovecot passes to "
                                f"PostgreSQL; allowed: {', '.join(sorted(_PG_PASSTHROUGH))}")
        params = [(k, v) for k, v in params if k != key] + [(key, value)]
    if not any(k == "dbname" for k, _ in params):
        raise StoreUrlError(f"store URL {parts.scheme}://{parts.hostname or ''}/ names no "
                            "database; write postgresql://user:password@host:port/DBNAME")
    return SqlDriver("pgsql", " ".join(f"{k}={_conninfo_value(v)}" for k, v in params))


def render_sql_conf(db_url: str) -> str:
    """The text of dovecot-sql.conf.ext for the store at `db_url`."""
    sql = driver_for(db_url)
    return "".join([
        "# generated by mailyard from the node's store URL: do not edit\n",
        f"driver = {sql.driver}\n",
        f"connect = {sql.connect}\n",
        f"default_pass_scheme = {DEFAULT_PASS_SCHEME}\n",
        f"password_query = {PASSWORD_QUERY}\n",
        f"user_query = {USER_QUERY}\n",
        f"iterate_query = {ITERATE_QUERY}\n",
    ])

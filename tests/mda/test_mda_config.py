"""Rendering Dovecot's configuration: store URLs, settings and switches, refused inputs."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mda_support import make_node, short_tmp

from mailyard.home import Home
from mailyard.mda import dovecot
from mailyard.mda.config import (
    DovecotConfigError,
    Identity,
    conf_path,
    paths,
    render_text,
)
from mailyard.mda.sqlconf import StoreUrlError, driver_for, render_sql_conf
from mailyard.services import certificates
from mailyard.services.control import ControlError
from mailyard.store.settings_store import load_settings, set_setting

ALL_ON = {"pop3": True, "pop3s": True, "imap": True, "imaps": True}
ROOT = Identity(True, "dovecot", "dovecot", "dovenull", 999, 995)
USER = Identity(False, "me", "me", "me", 1000, 1000)


@pytest.fixture
def home() -> Iterator[Home]:
    root = short_tmp("mda-conf")
    yield make_node(root, users=())
    shutil.rmtree(root, ignore_errors=True)


# ---- the store URL -----------------------------------------------------------------------------


def test_sqlite_url_becomes_the_file_path():
    sql = driver_for("sqlite:////srv/mail node/store.sqlite".replace(" ", "_"))
    assert (sql.driver, sql.connect) == ("sqlite", "/srv/mail_node/store.sqlite")


@pytest.mark.parametrize("url, words", [
    ("sqlite://", "names no SQLite file"),
    ("sqlite:///:memory:", "names no SQLite file"),
    ("sqlite:///relative/store.sqlite", "relative path"),
    ("sqlite:////srv/my#store.sqlite", "characters Dovecot's configuration cannot carry"),
    ("mysql://u@h/db", "neither SQLite"),
    ("postgresql://u@h/", "names no database"),
    ("postgresql://u@h:port/db", "port that is not a number"),
    ("postgresql://u@h/db?sslmode=require&evil=1", "parameter 'evil'"),
    ("postgresql://u@h/db\nx", "line break"),
])
def test_store_urls_dovecot_cannot_use_are_refused_with_the_reason(url, words):
    with pytest.raises(StoreUrlError, match=words):
        driver_for(url)


def test_postgresql_url_becomes_a_libpq_connect_string_libpq_reads_back():
    url = "postgresql://mail%20user:p%27a%20ss%23w%5Crd@db.example.test:5433/mailyard?sslmode=require"
    sql = driver_for(url)
    assert sql.driver == "pgsql"
    parsed = psycopg.conninfo.conninfo_to_dict(sql.connect)
    assert parsed == {"host": "db.example.test", "port": "5433", "dbname": "mailyard",
                      "user": "mail user", "password": "p'a ss#w\\rd", "sslmode": "require"}
    # The "#" sits inside libpq's quotes, so Dovecot's parser does not take it for a comment.
    assert "#" not in sql.connect.split("'")[0]


def test_sql_conf_queries_only_active_mailboxes():
    text = render_sql_conf("sqlite:////srv/node/store.sqlite")
    assert "driver = sqlite\n" in text and "connect = /srv/node/store.sqlite\n" in text
    for line in text.splitlines():
        if line.startswith(("password_query", "user_query", "iterate_query")):
            assert "FROM mailboxes" in line and line.endswith("AND active") or \
                line.endswith("WHERE active")


# ---- dovecot.conf -------------------------------------------------------------------------------


def test_settings_become_dovecot_limits_per_service(home):
    set_setting(home, "pop3s.max_connections", 9)
    set_setting(home, "pop3s.memory_limit_mb", 128)
    set_setting(home, "imap.max_connections", 33)
    text = render_text(home, load_settings(home), ALL_ON, ROOT, ipv6=True)
    pop3s = text[text.index("service pop3s {"):]
    pop3s = pop3s[:pop3s.index("\n}") + 2]
    assert "process_limit = 9\n" in pop3s and "vsz_limit = 128 M\n" in pop3s
    assert "client_limit = 1\n" in pop3s
    login = text[text.index("service pop3s-login {"):]
    assert "executable = pop3-login -l pop3s" in login
    assert f"port = {home.port('pop3s')}" in login
    imap = text[text.index("service imap {"):]
    assert "process_limit = 33\n" in imap[:imap.index("\n}")]
    assert "listen = *, ::\n" in text


def test_a_switched_off_listener_is_rendered_without_a_port(home):
    text = render_text(home, load_settings(home), dict(ALL_ON, imaps=False), ROOT, ipv6=False)
    imaps_login = text[text.index("service imaps-login {"):]
    assert "inet_listener imaps {\n    port = 0\n" in imaps_login
    assert "process_min_avail = 0" in imaps_login[:imaps_login.index("\n}")]
    assert f"port = {home.port('imap')}\n" in text
    assert "listen = *\n" in text


def test_plaintext_networks_become_remote_blocks(home):
    set_setting(home, "mda.plaintext_networks", "192.0.2.0/24\n2001:db8::/32")
    text = render_text(home, load_settings(home), ALL_ON, ROOT, ipv6=True)
    assert "disable_plaintext_auth = yes\n" in text
    assert "remote 192.0.2.0/24 {\n  disable_plaintext_auth = no\n}" in text
    assert "remote 2001:db8::/32 {\n  disable_plaintext_auth = no\n}" in text
    assert "remote 127.0.0.0/8" not in text


def test_unprivileged_identity_drops_the_chroots(home):
    text = render_text(home, load_settings(home), ALL_ON, USER, ipv6=True)
    assert "default_login_user = me\n" in text and "mail_uid = 1000\n" in text
    assert "service anvil {\n  chroot = \n}" in text
    assert "chroot = login" not in text
    rooted = render_text(home, load_settings(home), ALL_ON, ROOT, ipv6=True)
    assert "chroot = login" in rooted and "service anvil" not in rooted


def test_a_home_too_long_for_unix_sockets_is_refused(tmp_path: Path):
    deep = short_tmp("mda-long") / ("d" * 60)
    try:
        deep.mkdir()
        home = make_node(deep, users=())
        with pytest.raises(DovecotConfigError, match="too long for Dovecot's sockets"):
            render_text(home, load_settings(home), ALL_ON, ROOT, ipv6=True)
        with pytest.raises(ControlError, match="too long"):
            dovecot.render(home)
    finally:
        shutil.rmtree(deep.parent, ignore_errors=True)


def test_render_writes_both_files_and_doveconf_accepts_them(home):
    conf = dovecot.render(home)
    assert conf == conf_path(home)
    sql_conf = paths(home).sql_conf
    assert (sql_conf.stat().st_mode & 0o777) == 0o600  # may hold a database password
    assert f"args = {sql_conf}" in conf.read_text()
    done = subprocess.run(["doveconf", "-c", str(conf), "-n"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert not list(conf.parent.glob("*.tmp"))


def test_render_at_the_highest_settings_gives_no_dovecot_warnings(home):
    for service in ("pop3", "pop3s", "imap", "imaps"):
        set_setting(home, f"{service}.max_connections", 5000)
    conf = dovecot.render(home)
    done = subprocess.run(["doveconf", "-c", str(conf), "-n"], capture_output=True, text=True)
    assert done.returncode == 0 and "lower than required" not in done.stderr, done.stderr


def test_version_is_what_dovecot_reports():
    reported = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
    assert dovecot.version() == "Dovecot " + reported.strip()
    assert dovecot.version().startswith("Dovecot 2.")


def test_a_missing_certificate_is_named(home):
    home.key_file.unlink()
    with pytest.raises(ControlError, match=r"TLS key .*key.pem is missing"):
        dovecot.render(home)


def test_low_ports_without_root_are_refused_with_the_way_out(home):
    home.port_base = 0
    with pytest.raises(ControlError, match="ports below 1024 need root.*pop3 110.*port base"):
        dovecot.render(home, ident=USER)


def test_dovecot_runs_with_the_longest_home_path_accepted():
    from mda_support import IMAP, PASSWORD, start_dovecot, stop_dovecot

    from mailyard.mda.config import LONGEST_SOCKET, SUN_PATH_MAX

    root = short_tmp("mda-edge")
    try:
        # HOME/var/dovecot + the longest socket name is exactly the most a socket path may be
        room = SUN_PATH_MAX - len(LONGEST_SOCKET) - len("/var/dovecot") - len("/node")
        middle = root / ("x" * (room - len(str(root)) - 1))
        middle.mkdir()
        home = make_node(middle, users=("alice",))
        assert len(str(paths(home).base_dir)) + len(LONGEST_SOCKET) == SUN_PATH_MAX
        node = start_dovecot(home)
        try:
            client = IMAP(node.port("imap"))
            assert client.login("alice@example.test", PASSWORD)[0] == "OK"
            client.logout()
        finally:
            stop_dovecot(node)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_hosted_domains_certificate_is_chosen_by_sni(home):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imap.example.org")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("imap.example.org")]), False)
            .sign(key, hashes.SHA256()))
    certificates.install(home.tls_dir, cert.public_bytes(serialization.Encoding.PEM),
                         key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()),
                         ["imap.example.org"], "imap.example.org")
    conf = dovecot.render(home)
    done = subprocess.run(["doveconf", "-c", str(conf), "-n"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "local_name imap.example.org {" in done.stdout
    assert "domains/imap.example.org/cert.pem" in done.stdout

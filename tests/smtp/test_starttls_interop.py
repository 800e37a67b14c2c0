"""STARTTLS with real clients: every message sent over STARTTLS arrives (issue 16, item 1).

The stall these tests guard against: a client that sends its first command in the same flight
as its TLS Finished message (TLS 1.3 clients do, aiosmtplib and Postfix among them) had that
command thrown away by the server, and the session then waited for the idle timeout. Each
client here has a socket timeout far below the server's (1200 s), so a lost command shows as a
failed test, not as a slow one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from smtp_helpers import JOE, RawClient, queue_entries, wait_until
from tests.conftest import free_port

from mailyard.home import Home
from mailyard.services import certificates

# A client waits this long for any one reply before the test calls the session stalled; the
# server's own idle timeout is 1200 s, so a dropped command can never be answered in time.
STALL_SECONDS = 20.0


def client_tls(tls13: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the node's certificate is self-signed
    if tls13:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class MemoryTlsClient:
    """A TLS client over a plain socket through memory BIOs, so the test decides exactly
    which bytes go out in which write (the standard library's wrapped sockets do not)."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_tls(tls13=True).wrap_bio(self.incoming, self.outgoing,
                                                   server_hostname="localhost")
        if leftover:
            self.incoming.write(leftover)
        self.buf = b""

    def handshake_then(self, first_command: bytes) -> None:
        """Finish the handshake, then send the client's Finished and `first_command` in one
        write, as a TLS 1.3 client that does not wait for the server may."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = self.outgoing.read()
                if pending:
                    self.sock.sendall(pending)
                self._receive()
        assert self.tls.version() == "TLSv1.3"
        self.tls.write(first_command)
        self.sock.sendall(self.outgoing.read())  # Finished + the command, one segment

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.incoming.write(chunk)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def reply(self) -> bytes:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                try:
                    self.buf += self.tls.read(65536)
                except ssl.SSLWantReadError:
                    pending = self.outgoing.read()  # e.g. a key update answer
                    if pending:
                        self.sock.sendall(pending)
                    self._receive()
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"\r\n".join(lines)


def starttls_session(node: Home) -> tuple[RawClient, MemoryTlsClient]:
    raw = RawClient(node.port("smtp"), timeout=STALL_SECONDS)
    assert raw.code() == 220
    raw.send(b"EHLO client.test\r\n")
    assert b"STARTTLS" in raw.reply()
    raw.send(b"STARTTLS\r\n")
    assert raw.reply().startswith(b"220 ")
    return raw, MemoryTlsClient(raw.sock, leftover=raw.buf)


def test_a_command_sent_with_the_tls_finished_is_answered(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    for _ in range(5):  # it failed every time before the fix; a few rounds make it certain
        raw, tls = starttls_session(node)
        tls.handshake_then(b"EHLO client.test\r\n")
        ehlo = tls.reply()
        assert ehlo.startswith(b"250-") and b"STARTTLS" not in ehlo
        tls.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<" + JOE.encode() + b">\r\nDATA\r\n")
        assert [tls.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        tls.send(b"Subject: with the Finished\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        assert tls.reply().startswith(b"250 ")
        assert tls.reply().startswith(b"221 ")
        raw.close()
    entries = queue_entries(node)
    assert len(entries) == 5
    assert all(b"with ESMTPS" in data for _, data in entries)


def test_clear_text_sent_before_the_handshake_is_still_discarded(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    raw = RawClient(node.port("smtp"), timeout=STALL_SECONDS)
    assert raw.code() == 220
    raw.send(b"EHLO client.test\r\n")
    raw.reply()
    raw.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\n")
    assert raw.reply().startswith(b"220 ")
    tls = MemoryTlsClient(raw.sock, leftover=raw.buf)
    tls.handshake_then(b"RCPT TO:<" + JOE.encode() + b">\r\n")
    reply = tls.reply()
    assert reply.startswith(b"503 "), reply  # no EHLO after TLS, and the clear MAIL is gone
    raw.close()
    svc.wait_log("end ip=")  # every line of the session is in the log
    assert "evil@attacker.test" not in svc.log()


def test_aiosmtplib_concurrent_starttls_sessions_all_deliver(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    count, parallel = 30, 10

    async def one(i: int, gate: asyncio.Semaphore) -> None:
        message = EmailMessage()
        message["From"] = "sender@remote.test"
        message["To"] = JOE
        message["Subject"] = f"aiosmtplib {i}"
        message.set_content(f"message {i}\n")
        async with gate:
            await aiosmtplib.send(message, hostname="127.0.0.1", port=node.port("smtp"),
                                  start_tls=True, tls_context=client_tls(),
                                  timeout=STALL_SECONDS)

    async def all_of_them() -> None:
        gate = asyncio.Semaphore(parallel)
        await asyncio.gather(*(one(i, gate) for i in range(count)))

    asyncio.run(all_of_them())
    subjects = sorted(data.split(b"Subject: ", 1)[1].split(b"\n", 1)[0].strip()
                      for _, data in queue_entries(node))
    assert subjects == sorted(f"aiosmtplib {i}".encode() for i in range(count))


def test_openssl_s_client_starttls_smtp(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    script = (f"EHLO client.test\nMAIL FROM:<a@remote.test>\nRCPT TO:<{JOE}>\nDATA\n"
              "Subject: via s_client\n\nhello\n.\nQUIT\n")
    out = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"127.0.0.1:{node.port('smtp')}", "-crlf", "-quiet", "-ign_eof"],
        input=script.encode(), capture_output=True, timeout=60)
    text = out.stdout.decode(errors="replace")
    assert "250 2.0.0" in text and "221 " in text, text + out.stderr.decode(errors="replace")
    [(_, data)] = queue_entries(node)
    assert b"via s_client" in data and b"with ESMTPS" in data


def test_swaks_tls_on_port_25(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    for i in range(5):
        out = subprocess.run(
            ["swaks", "--helo", "client.test", "--server", f"127.0.0.1:{node.port('smtp')}",
             "--tls", "--from", "a@remote.test", "--to", JOE, "--body", f"swaks {i}",
             "--timeout", str(int(STALL_SECONDS))],
            capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stdout + out.stderr
    assert len(queue_entries(node)) == 5


# ---- Postfix's own SMTP client, relaying to us with TLS required -----------------------------

POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"


class PrivatePostfix:
    """A Postfix of the test's own (config, queue, no chroot) relaying everything it gets to
    one relay host with `smtp_tls_security_level = encrypt`: no TLS, no delivery."""

    def __init__(self, base: Path, relay_port: int) -> None:
        self.dir = base
        self.port = free_port()
        self.relay_port = relay_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        d = self.dir
        (d / "queue").mkdir(parents=True)
        (d / "data").mkdir()
        shutil.chown(d / "data", "postfix")
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"  # no chroot: the queue is ours, not /var/spool/postfix
                line = " ".join(fields)
            lines.append(line)
        (d / "master.cf").write_text("\n".join(lines) + "\n")
        (d / "main.cf").write_text("")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(d / "queue"),
            "data_directory": str(d / "data"),
            "meta_directory": "/etc/postfix",
            "myhostname": "relay.postfix.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "smtp_tls_security_level": "encrypt",
            "smtp_tls_loglevel": "1",
            "smtputf8_enable": "no",
            "maillog_file_prefixes": str(d),
            "maillog_file": str(d / "maillog"),
        }
        subprocess.run(["postconf", "-c", str(d), "-e",
                        *(f"{k}={v}" for k, v in settings.items())], check=True)
        subprocess.run(["postfix", "-c", str(d), "check"], check=True, capture_output=True)
        self.proc = subprocess.Popen([POSTFIX_MASTER, "-c", str(d), "-d"],
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(self._listening, timeout=60, what="postfix to listen")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def postfix_relay(node: Home):  # type: ignore[no-untyped-def]
    if not Path(POSTFIX_MASTER).exists():
        pytest.fail("Postfix is missing: `make test` installs it (scripts/setup.sh)")
    base = Path(tempfile.mkdtemp(prefix="mailyard-postfix-relay-"))
    base.chmod(0o755)  # Postfix's daemons run as `postfix` and must reach their data dir
    relay = PrivatePostfix(base, node.port("smtp"))
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_to_us_with_tls_required(node: Home, start, postfix_relay) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    count = 10
    with smtplib.SMTP("127.0.0.1", postfix_relay.port, timeout=STALL_SECONDS) as s:
        for i in range(count):
            s.sendmail("sender@remote.test", [JOE],
                       f"From: sender@remote.test\r\nTo: {JOE}\r\nSubject: postfix {i}\r\n"
                       f"\r\nrelayed by postfix\r\n")
    try:
        wait_until(lambda: len(queue_entries(node)) == count, timeout=120,
                   what="every message relayed by Postfix")
    except AssertionError:
        raise AssertionError(f"postfix log:\n{postfix_relay.log()}") from None
    assert all(b"with ESMTPS" in data for _, data in queue_entries(node))
    assert "TLS connection established" in postfix_relay.log()


def _self_signed(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_sni_gives_a_hosted_domain_its_own_certificate(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    cert, key = _self_signed("mail.example.org")
    certificates.install(node.tls_dir, cert, key, ["mail.example.org"], "mail.example.org")
    start("smtp")

    def subject(*servername: str) -> str:
        out = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"127.0.0.1:{node.port('smtp')}", *servername],
            input=b"", capture_output=True, timeout=60)
        found = re.search(rb"subject=.*?CN ?= ?([\w.-]+)", out.stdout)
        assert found, out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
        return found.group(1).decode()

    assert subject("-servername", "mail.example.org") == "mail.example.org"
    assert subject("-servername", "mx.example.test") == "mx.example.test"
    assert subject("-noservername") == "mx.example.test"

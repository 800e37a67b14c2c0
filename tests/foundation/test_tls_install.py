"""`mailyard tls install` (issue 18.4): a real certificate is checked before it replaces the
self-signed one — key, chain order, names, dates — and nothing is written when it is refused."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailyard.home import Home
from mailyard.services.server_tls import server_context, sni_context

NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject: str, issuer_key: ec.EllipticCurvePrivateKey | None = None,
          issuer: str | None = None, names: tuple[str, ...] = (), ca: bool = False,
          days: int = 90, start_days: int = -1) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(_name(issuer or subject)).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW + dt.timedelta(days=start_days))
               .not_valid_after(NOW + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def chain_for(*names: str, days: int = 90, start_days: int = -1) -> tuple[bytes, bytes, bytes]:
    """(leaf+intermediate PEM, leaf key PEM, intermediate PEM) under a test root."""
    root, root_key = issue("Test Root", ca=True, days=3650)
    inter, inter_key = issue("Test Intermediate", root_key, "Test Root", ca=True, days=3650)
    leaf, leaf_key = issue(names[0], inter_key, "Test Intermediate", names, days=days,
                           start_days=start_days)
    return pem(leaf, inter), key_pem(leaf_key), pem(inter)


def install(cli_env: dict[str, str], tmp: Path, cert: bytes, key: bytes,
            *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp / "c.pem").write_bytes(cert)
    (tmp / "k.pem").write_bytes(key)
    return subprocess.run(["mailyard", "tls", "install", str(tmp / "c.pem"), str(tmp / "k.pem"),
                           *extra], env=cli_env, capture_output=True, text=True, timeout=60)


def test_a_good_chain_replaces_the_self_signed_certificate(home: Home, cli_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    cert, key, _ = chain_for("mx.example.test")
    out = install(cli_env, tmp_path, cert, key)
    assert out.returncode == 0, out.stderr
    assert home.cert_file.read_bytes() == cert
    assert home.key_file.stat().st_mode & 0o777 == 0o600
    listed = subprocess.run(["mailyard", "tls", "list"], env=cli_env, capture_output=True,
                            text=True, timeout=60).stdout
    assert "mx.example.test" in listed and "no" in listed  # not self-signed any more


def test_refusals_name_what_is_wrong_and_write_nothing(home: Home, cli_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    before = (home.cert_file.read_bytes(), home.key_file.read_bytes())
    cert, key, inter = chain_for("mx.example.test")
    _, other_key, _ = chain_for("mx.example.test")
    leaf = cert[:len(cert) - len(inter)]
    other_cert, other_cert_key, _ = chain_for("other.test")
    cases = [
        (cert, other_key, "the key does not belong to the certificate"),
        (inter + leaf, key, "the key does not belong"),  # intermediate first
        (other_cert, other_cert_key, "not for mx.example.test"),
        (*chain_for("mx.example.test", days=-1, start_days=-30)[:2], "expired"),
        (*chain_for("mx.example.test", start_days=2)[:2], "not valid before"),
        (b"not a certificate", key, "no PEM certificate"),
        (cert, b"not a key", "no unencrypted PEM private key"),
    ]
    for cert_pem, key_bytes, reason in cases:
        out = install(cli_env, tmp_path, cert_pem, key_bytes)
        assert out.returncode == 2, (reason, out.stdout, out.stderr)
        assert "nothing installed" in out.stderr and reason in out.stderr, out.stderr
        assert (home.cert_file.read_bytes(), home.key_file.read_bytes()) == before
    # a chain whose second certificate did not issue the first
    root2, root2_key = issue("Other Root", ca=True)
    out = install(cli_env, tmp_path, leaf + pem(root2), key)
    assert out.returncode == 2 and "chain is not in order" in out.stderr


def test_warnings_for_a_short_life_and_a_missing_intermediate(home: Home, cli_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    cert, key, inter = chain_for("mx.example.test", days=10)
    out = install(cli_env, tmp_path, cert[:len(cert) - len(inter)], key)
    assert out.returncode == 0, out.stderr
    assert "expires in 9 days" in out.stdout or "expires in 10 days" in out.stdout
    assert "no intermediate certificate" in out.stdout


def test_a_hosted_domain_gets_its_own_certificate(home: Home, cli_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    before = home.cert_file.read_bytes()
    cert, key, _ = chain_for("mail.example.org", "*.example.org")
    out = install(cli_env, tmp_path, cert, key, "--domain", "mail.example.org")
    assert out.returncode == 0, out.stderr
    assert (home.tls_dir / "domains" / "mail.example.org" / "cert.pem").read_bytes() == cert
    assert home.cert_file.read_bytes() == before  # the node's own one stays
    out = install(cli_env, tmp_path, cert, key, "--domain", "example.net")
    assert out.returncode == 2 and "not for example.net" in out.stderr


def test_sni_chooses_the_domains_certificate(home: Home, cli_env: dict[str, str],
                                             tmp_path: Path) -> None:
    cert, key, _ = chain_for("mail.example.org")
    assert install(cli_env, tmp_path, cert, key, "--domain", "mail.example.org").returncode == 0
    base = server_context(home.cert_file, home.key_file)
    context = sni_context(base, home.tls_dir)

    def served_name(server_name: str) -> str:
        a, b = socket.socketpair()
        result: dict[str, object] = {}

        def serve() -> None:
            try:
                with context.wrap_socket(a, server_side=True) as s:
                    s.recv(1)
            except (ssl.SSLError, OSError) as exc:
                result["error"] = exc

        thread = threading.Thread(target=serve)
        thread.start()
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        with client.wrap_socket(b, server_hostname=server_name) as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(b"x")
        thread.join(10)
        assert der is not None
        leaf = x509.load_der_x509_certificate(der)
        return str(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    assert served_name("mail.example.org") == "mail.example.org"
    assert served_name("MAIL.example.org") == "mail.example.org"
    assert served_name("mx.example.test") == "mx.example.test"  # the node's own
    assert served_name("unknown.test") == "mx.example.test"

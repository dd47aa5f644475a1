"""Throw-away TLS material for the emulators and tests: a CA and a localhost certificate.

So ``sipwake emulate apns`` runs with zero setup: it makes a CA plus a server certificate
for ``localhost``, ``127.0.0.1`` and ``::1`` in a temporary directory and prints the CA path
for the client to trust. Built with ``cryptography`` (a hard dependency through ``pyjwt[crypto]``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertFiles:
    __test__: ClassVar[bool] = False  # not a pytest test class, despite the alias below

    directory: Path
    ca_file: Path  # PEM: trust this on the client side
    cert_file: Path  # PEM: server certificate chain
    key_file: Path  # PEM: server private key


TestCerts = CertFiles  # the first name, still used by tests


def make_test_certs(
    directory: str | Path | None = None, hosts: tuple[str, ...] = DEFAULT_HOSTS
) -> CertFiles:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``directory`` (a new temp dir
    when None) and return their paths."""
    out = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="sipwake-"))
    out.mkdir(parents=True, exist_ok=True)
    certs = CertFiles(out, out / "ca.pem", out / "server.pem", out / "server.key")
    # Built here rather than with trustme: the same certificates with or without the test
    # extra, and with the extensions strict verification wants (see _write_with_cryptography).
    _write_with_cryptography(certs, hosts)
    return certs


def server_context(
    cert_file: str | Path, key_file: str | Path, alpn: tuple[str, ...] = ("h2",)
) -> ssl.SSLContext:
    """A TLS server context offering ``alpn`` (RFC 7301); TLS 1.2+ as APNs requires."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A verifying TLS client context with ALPN h2, trusting ``ca_file`` (else the system)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _write_with_cryptography(certs: CertFiles, hosts: tuple[str, ...]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sipwake emulator CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # Python 3.13 verifies with VERIFY_X509_STRICT: a CA needs its Subject Key
        # Identifier and every issued certificate an Authority Key Identifier naming it
        # (RFC 5280 §4.2.1.1-2); without them "Missing Authority Key Identifier".
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    certs.ca_file.write_bytes(ca_cert.public_bytes(pem))
    certs.cert_file.write_bytes(cert.public_bytes(pem))
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(certs.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)

"""Start-up failures are one line naming the file, the key and the reason (issue 14 item 6):
bad TLS files, a key that is not the certificate's, a bad .p8 or service account, a port in
use, an unreachable Redis. The serve cases run the real ``sipwake serve`` in a subprocess."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sipwake.config import SetupError, loads_config
from sipwake.emulate.fcm import write_service_account
from sipwake.emulate.tlsutil import CertFiles, make_test_certs
from sipwake.preflight import preflight
from tests.e2e.harness import free_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_test_certs(tmp_path_factory.mktemp("tls"))


def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fails(text: str) -> SetupError:
    with pytest.raises(SetupError) as info:
        preflight(loads_config(text))
    return info.value


def tls_config(cert: Path | str, key: Path | str) -> str:
    return f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'


def test_missing_certificate(tmp_path: Path) -> None:
    err = fails(tls_config(tmp_path / "none.pem", tmp_path / "none.key"))
    assert err.key == "tls.cert_file"
    assert err.reason == f"{tmp_path / 'none.pem'}: cannot read: No such file or directory"


def test_garbage_certificate(tmp_path: Path, certs: CertFiles) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    err = fails(tls_config(junk, certs.key_file))
    assert (err.key, err.reason) == ("tls.cert_file", f"{junk}: no PEM certificate in it")


def test_key_not_the_certificates(tmp_path: Path, certs: CertFiles) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(pem_key(ec.generate_private_key(ec.SECP256R1())))
    err = fails(tls_config(certs.cert_file, other))
    assert err.key == "tls.key_file"
    assert err.reason == f"{other}: does not match the certificate in {certs.cert_file}"


def test_good_pair_is_described(certs: CertFiles) -> None:
    loaded = preflight(loads_config(tls_config(certs.cert_file, certs.key_file)))
    [cred] = loaded.credentials
    assert cred.key == "tls.cert_file"
    assert cred.what.startswith("CN=localhost, expires ")
    assert cred.not_after is not None


def apns(key_file: Path) -> str:
    return (
        '[[push.apns]]\nbundle_id = "com.example.app"\nteam_id = "T"\nkey_id = "K"\n'
        f'key_file = "{key_file}"\n'
    )


def test_p8_missing_and_wrong_kind(tmp_path: Path) -> None:
    err = fails(apns(tmp_path / "AuthKey.p8"))
    assert err.key == "push.apns[0].key_file"
    assert "cannot read: No such file or directory" in err.reason
    rsa_key = tmp_path / "rsa.p8"
    rsa_key.write_bytes(pem_key(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    err = fails(apns(rsa_key))
    assert (err.key, err.reason) == (
        "push.apns[0].key_file",
        f"{rsa_key}: not an EC P-256 key (ES256)",
    )


def test_service_account_not_json(tmp_path: Path) -> None:
    good = write_service_account(tmp_path / "good.json", token_uri="https://127.0.0.1/t")
    bad = tmp_path / "sa.json"
    bad.write_text("{not json")
    text = (
        f'[[push.fcm]]\nservice_account_file = "{good}"\n'
        f'[[push.fcm]]\nname = "b"\nservice_account_file = "{bad}"\n'
    )
    err = fails(text)
    assert (err.key, err.reason) == ("push.fcm[1].service_account_file", f"{bad}: not JSON")


def test_ca_file_that_is_no_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    err = fails(f'[tls]\nca_file = "{junk}"\n')
    assert err.key == "tls.ca_file"
    assert err.reason.startswith(f"{junk}: not a PEM CA bundle")


# --- the real server --------------------------------------------------------------------


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipwake.cli", "serve", "-c", str(config), "--no-uvloop"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # Log lines (time-stamped) may come first; the failure itself is one line.
    lines = [ln for ln in result.stderr.splitlines() if ln and not re.match(r"\d{4}-\d\d-", ln)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sipwake.toml"
    path.write_text('[api]\nenabled = false\n[storage]\nurl = "memory://"\n' + text)
    return path


def test_serve_port_in_use_names_the_listener(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        udp = free_port()
        path = write(
            tmp_path,
            f'[[listen]]\nport = {udp}\n[[listen]]\ntransport = "tcp"\nport = {port}\n',
        )
        line = one_line(serve(path))
    assert (
        line == f"{path}: listen[1]: cannot listen on tcp 127.0.0.1:{port}: address already in use"
    )


def test_serve_redis_unreachable_names_the_url(tmp_path: Path) -> None:
    dead = free_port(socket.SOCK_STREAM)
    path = tmp_path / "sipwake.toml"
    path.write_text(
        f'[api]\nenabled = false\n[storage]\nurl = "redis://:secret@127.0.0.1:{dead}/0"\n'
        f"[[listen]]\nport = {free_port()}\n"
    )
    line = one_line(serve(path))
    assert line.startswith(f"{path}: storage.url: redis://:***@127.0.0.1:{dead}/0: cannot open: ")
    assert "secret" not in line


def test_serve_missing_tls_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        tls_config("/nonexistent/fullchain.pem", "/nonexistent/privkey.pem")
        + f'[[listen]]\ntransport = "tls"\nport = {free_port(socket.SOCK_STREAM)}\n',
    )
    assert one_line(serve(path)) == (
        f"{path}: tls.cert_file: /nonexistent/fullchain.pem: cannot read: No such file or directory"
    )


def test_serve_api_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "sipwake.toml"
        path.write_text(
            f'[api]\nport = {port}\n[storage]\nurl = "memory://"\n'
            f"[[listen]]\nport = {free_port()}\n"
        )
        line = one_line(serve(path))
    assert line == f"{path}: api.port: cannot listen on 127.0.0.1:{port}: address already in use"


def test_enum_error_lists_the_allowed_values() -> None:
    from sipwake.config import ConfigError

    with pytest.raises(ConfigError) as info:
        loads_config('[[push.apns]]\nbundle_id = "x"\nenvironment = "prod"\n', "s.toml")
    assert str(info.value) == (
        "s.toml: push.apns[0].environment: invalid value 'prod', "
        "expected one of: production, sandbox"
    )

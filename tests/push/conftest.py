"""Fixtures: a throw-away CA, an ES256 signing key (.p8) and a running APNs emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.emulate.apns import ApnsEmulator, ApnsEmulatorConfig, ApnsKey, serve_apns
from sipwake.emulate.tlsutil import CertFiles, make_test_certs
from sipwake.push.apns import ApnsProvider

TEAM = "TEAM123456"
KID = "KEY1234567"
BUNDLE = "com.example.app"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_test_certs(tmp_path_factory.mktemp("certs"))


def write_p8(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="session")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def p8_file(tmp_path: Path, signing_key: ec.EllipticCurvePrivateKey) -> Path:
    return write_p8(tmp_path / "AuthKey.p8", signing_key)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emulator(
    certs: CertFiles, signing_key: ec.EllipticCurvePrivateKey, clock: Clock
) -> AsyncIterator[ApnsEmulator]:
    config = ApnsEmulatorConfig(
        cert_file=str(certs.cert_file),
        key_file=str(certs.key_file),
        keys={KID: ApnsKey(TEAM, signing_key.public_key())},
        topics={BUNDLE},
        clock=clock,
    )
    em = await serve_apns(config)
    yield em
    await em.close()


@pytest.fixture
async def make_provider(
    emulator: ApnsEmulator, certs: CertFiles, p8_file: Path
) -> AsyncIterator[Callable[..., ApnsProvider]]:
    made: list[ApnsProvider] = []

    def make(**kwargs: Any) -> ApnsProvider:
        options: dict[str, Any] = {
            "topic_bundle_id": BUNDLE,
            "team_id": TEAM,
            "key_id": KID,
            "key_file": p8_file,
            "base_url": f"https://127.0.0.1:{emulator.port}",
            "ca_file": certs.ca_file,
            "timeout": 5.0,
        }
        options.update(kwargs)
        provider = ApnsProvider("apns", **options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()

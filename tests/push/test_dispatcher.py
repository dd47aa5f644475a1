"""PushDispatcher routing with two apps per provider, through the real emulators: each push
must reach the entry of its own app (APNs by bundle id in pn-param, FCM by the project id
RFC 8599 §10 puts in pn-param), and a target no entry serves is refused, never misrouted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.config import ApnsConfig, FcmConfig, PushConfig
from sipwake.emulate.apns import ApnsEmulatorConfig, ApnsKey, serve_apns
from sipwake.emulate.fcm import FcmEmulator, FcmEmulatorConfig, serve_fcm, write_service_account
from sipwake.emulate.tlsutil import CertFiles, make_test_certs
from sipwake.policy.bindings import PushTarget
from sipwake.push.base import Delivered, Permanent, PushRequest
from sipwake.push.dispatcher import PushDispatcher
from sipwake.push.oauth import load_service_account
from tests.push.conftest import write_p8

TEAM = "TEAM123456"
FCM_TOKEN = "dGVzdC10b2tlbg:APA91bF-example_token.1"
APNS_TOKEN = "ab" * 32


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_test_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def fcm(tls: CertFiles) -> AsyncIterator[FcmEmulator]:
    emulator = await serve_fcm(
        FcmEmulatorConfig(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    )
    yield emulator
    await emulator.close()


def request(target: PushTarget) -> PushRequest:
    return PushRequest(
        target=target, payload={"type": "call", "call_id": "c1"}, expires_at=time.time() + 30
    )


async def test_two_fcm_projects_routed_by_pn_param(
    fcm: FcmEmulator, tls: CertFiles, tmp_path: Path
) -> None:
    entries = []
    for name, project, package in (
        ("work", "acme-work", "com.acme.work"),
        ("home", "acme-home", "com.acme.home"),
    ):
        sa = write_service_account(
            tmp_path / f"{name}.json",
            token_uri=fcm.token_uri,
            project_id=project,
            client_email=f"sipwake@{project}.iam.gserviceaccount.com",
        )
        fcm.add_account(load_service_account(sa))
        # app_id set on both, as an operator telling two apps apart would: RFC 8599
        # targets carry no app id, so the project in pn-param must decide.
        entries.append(
            FcmConfig(
                name=name,
                service_account_file=str(sa),
                app_id=package,
                base_url=fcm.base_url,
                ca_file=str(tls.ca_file),
            )
        )
    dispatcher = PushDispatcher.from_config(PushConfig(fcm=tuple(entries)))
    try:
        for project in ("acme-home", "acme-work", "acme-home"):
            outcome = await dispatcher.send(request(PushTarget("fcm", FCM_TOKEN, param=project)))
            assert isinstance(outcome, Delivered), outcome
        assert [p["project"] for p in fcm.pushes] == ["acme-home", "acme-work", "acme-home"]
        # A legacy target naming the package still finds its entry.
        legacy = PushTarget("fcm", FCM_TOKEN, param="929724111839", app_id="com.acme.work")
        assert isinstance(await dispatcher.send(request(legacy)), Delivered)
        assert fcm.pushes[-1]["project"] == "acme-work"
        # A project nobody serves is refused rather than sent with the wrong credentials.
        stranger = PushTarget("fcm", FCM_TOKEN, param="someone-else")
        assert await dispatcher.send(request(stranger)) == Permanent("NoProviderForApp")
        assert len(fcm.pushes) == 4
    finally:
        await dispatcher.close()


async def test_two_apns_apps_routed_by_bundle_id(tls: CertFiles, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    p8 = write_p8(tmp_path / "AuthKey.p8", key)
    bundles = ("com.acme.work", "com.acme.home")
    emulator = await serve_apns(
        ApnsEmulatorConfig(
            cert_file=str(tls.cert_file),
            key_file=str(tls.key_file),
            keys={"KEY1": ApnsKey(TEAM, key.public_key())},
            topics=set(bundles),
        )
    )
    base = f"https://127.0.0.1:{emulator.port}"
    entries = tuple(
        ApnsConfig(
            name=b.rsplit(".", 1)[1],
            bundle_id=b,
            team_id=TEAM,
            key_id="KEY1",
            key_file=str(p8),
            base_url=base,
            ca_file=str(tls.ca_file),
        )
        for b in bundles
    )
    dispatcher = PushDispatcher.from_config(PushConfig(apns=entries))
    try:
        for bundle in ("com.acme.home", "com.acme.work"):
            target = PushTarget("apns", APNS_TOKEN, param=f"{TEAM}.{bundle}.voip")
            outcome = await dispatcher.send(request(target))
            assert isinstance(outcome, Delivered), outcome
        topics = [p["headers"]["apns-topic"] for p in emulator.pushes]
        assert topics == ["com.acme.home.voip", "com.acme.work.voip"]
        stranger = PushTarget("apns", APNS_TOKEN, param=f"{TEAM}.org.other.voip")
        assert await dispatcher.send(request(stranger)) == Permanent("NoProviderForApp")
    finally:
        await dispatcher.close()
        await emulator.close()

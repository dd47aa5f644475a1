"""Pieces for the SIP MESSAGE end-to-end tests (issue 13): an APNs emulator that hands
each push to the phone whose token it names (held back until the test releases it), a
sender that sends MESSAGEs over UDP, and the server configuration."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from sipwake.config import (
    ApiConfig,
    ApnsConfig,
    AuthConfig,
    Config,
    FcmConfig,
    ListenConfig,
    MessageConfig,
    PushConfig,
    ServerConfig,
    SipConfig,
    StorageConfig,
    TlsConfig,
)
from sipwake.emulate.apns import ApnsEmulator, ApnsEmulatorConfig, ApnsKey, generate_key, post_json
from sipwake.emulate.phone import Phone, PhoneConfig
from sipwake.emulate.tlsutil import CertFiles, make_test_certs
from sipwake.emulate.ua import Link, UserAgentCore, new_id
from sipwake.sip.headers import Headers
from sipwake.sip.message import Request, Response
from sipwake.sip.timers import DEFAULT_TIMERS

TEAM, KEY_ID, BUNDLE = "TEAM123456", "KEY1234567", "com.example.phone"
ADMIN_TOKEN = "admin-secret"


class DeviceApns(ApnsEmulator):
    """APNs standing in for Apple's delivery: each accepted push goes to the phone that
    registered the token, once the test calls ``release()`` (so a test decides when a
    device wakes; before that pushes are only recorded)."""

    def __init__(self, config: ApnsEmulatorConfig) -> None:
        super().__init__(config)
        self.phones: dict[str, str] = {}  # token -> the phone's push URL
        self.held: list[dict[str, Any]] = []
        self.open = False
        self.arrived = asyncio.Event()

    def forward(self, record: dict[str, Any]) -> None:
        self.arrived.set()
        if self.open:
            self._send(record)
        else:
            self.held.append(record)

    def release(self) -> None:
        self.open = True
        held, self.held = self.held, []
        for record in held:
            self._send(record)

    def _send(self, record: dict[str, Any]) -> None:
        url = self.phones.get(str(record.get("token", "")).lower())
        if url:
            task = asyncio.get_running_loop().create_task(post_json(url, record))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait_pushes(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.pushes) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return list(self.pushes)


async def start_apns(
    work: Path, certs: CertFiles, cls: type[DeviceApns] = DeviceApns
) -> tuple[DeviceApns, str]:
    key_file, public_key = generate_key(work)
    emu = cls(
        ApnsEmulatorConfig(
            cert_file=str(certs.cert_file),
            key_file=str(certs.key_file),
            keys={KEY_ID: ApnsKey(TEAM, public_key)},
            topics={BUNDLE},
        )
    )
    await emu.start()
    return emu, str(key_file)


def server_config(
    work: Path,
    certs: CertFiles,
    apns: DeviceApns,
    key_file: str,
    *,
    storage: str = "",
    ports: tuple[int, int, int] = (0, 0, 0),
    node_id: str = "",
    fcm: tuple[FcmConfig, ...] = (),
    **message: Any,
) -> Config:
    udp, tcp, tls = ports
    return Config(
        server=ServerConfig(domains=("127.0.0.1",), node_id=node_id),
        listen=(
            ListenConfig(transport="udp", host="127.0.0.1", port=udp),
            ListenConfig(transport="tcp", host="127.0.0.1", port=tcp),
            ListenConfig(transport="tls", host="127.0.0.1", port=tls),
        ),
        tls=TlsConfig(cert_file=str(certs.cert_file), key_file=str(certs.key_file)),
        sip=SipConfig(max_message_size=message.pop("max_message_size", 65535)),
        storage=StorageConfig(url=storage or f"sqlite://{work / 'sipwake.db'}"),
        auth=AuthConfig(enabled=False),
        api=ApiConfig(port=0, admin_token=ADMIN_TOKEN),
        push=PushConfig(
            apns=(
                ApnsConfig(
                    name="apns-emulator",
                    bundle_id=BUNDLE,
                    team_id=TEAM,
                    key_id=KEY_ID,
                    key_file=key_file,
                    base_url=f"https://127.0.0.1:{apns.port}",
                    ca_file=str(certs.ca_file),
                ),
            ),
            fcm=fcm,
        ),
        message=MessageConfig(**message),
    )


def make_certs(work: Path) -> CertFiles:
    return make_test_certs(work / "certs")


async def new_phone(
    apns: DeviceApns,
    server: tuple[str, int],
    transport: str,
    ca_file: str,
    **kw: Any,
) -> Phone:
    """A phone with a VoIP and an alert (remote) token, known to the emulator by its alert
    token: messages are announced with alert pushes."""
    voip, remote = secrets.token_hex(32), secrets.token_hex(32)
    phone = Phone(
        PhoneConfig(
            server=server,
            transport=transport,
            token=f"{voip}:voip&{remote}:remote",
            param=f"{TEAM}.{BUNDLE}.voip&remote",
            ca_file=ca_file,
            tls_name="localhost" if transport == "tls" else "",
            wake_delay=0.0,
            **kw,
        )
    )
    await phone.start()
    apns.phones[remote] = phone.push_url
    apns.phones[voip] = phone.push_url
    phone.remote_token = remote  # type: ignore[attr-defined]
    return phone


class Sender:
    """Alice: sends MESSAGEs from one UDP socket and returns the final answers."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.ua = UserAgentCore(DEFAULT_TIMERS, self._request, self._cancel, lambda ack: None)
        self.link = Link("udp", server, self.ua.receive)
        self.call_ids: list[str] = []

    async def open(self) -> Sender:
        await self.link.open()
        return self

    async def send(
        self,
        text: str | bytes,
        to: str = "bob",
        *,
        content_type: str = "text/plain",
        call_id: str = "",
        cseq: int = 1,
    ) -> Response:
        host, port = self.link.local
        call_id = call_id or new_id(10) + "@alice"
        self.call_ids.append(call_id)
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{new_id(8)};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f'"Alice" <sip:alice@127.0.0.1>;tag={new_id(4)}')
        h.add("To", f"<sip:{to}@127.0.0.1>")
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} MESSAGE")
        request = Request("MESSAGE", f"sip:{to}@127.0.0.1", h)
        request.set_body(text.encode() if isinstance(text, str) else text, content_type)
        return await self.ua.request(request, self.link.server_flow)

    def _request(self, request: Request, txn_id: str, flow: Any) -> None:
        return None

    def _cancel(self, cancel: Request, txn_id: str, invite_txn_id: str | None) -> None:
        return None

    def close(self) -> None:
        self.link.close()
        self.ua.close()


def bodies(phone: Phone) -> list[bytes]:
    return [m.body for m in phone.messages]

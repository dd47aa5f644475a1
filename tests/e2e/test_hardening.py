"""Attacks over real sockets against a server with authentication on (issue 15): user
enumeration from a foreign domain, blind lock-out with invented nonces, many addresses
guessing one password, push spam."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    PHONE_PARAM,
    ApnsEmulator,
    RunningServer,
    apns_emulator,
    loopback_config,
    serve,
    wait_output_server,
    write_config,
)
from tests.e2e.probe import Prober, RingingCallee, add_user

pytestmark = pytest.mark.e2e

DOMAIN = "127.0.0.1"
MAX_FAILURES = 5


def auth_config(tmp: Path, extra: str = "") -> str:
    return loopback_config(
        domains=(DOMAIN,),
        storage=f"sqlite:///{tmp}/users.db",
        extra=f"""
[auth]
enabled = true
algorithms = ["MD5"]
max_failures = {MAX_FAILURES}
failure_window = 60.0
{extra}
""",
    )


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RunningServer]:
    text = auth_config(tmp_path)
    cfg = write_config(tmp_path / "sipwake.toml", text)
    add_user(cfg, "alice", "1234")
    add_user(cfg, "bob", "s3cret")
    with serve(text, tmp_path) as server:
        yield server
        assert server.alive(), "server died during the test"


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "MESSAGE"])
def test_foreign_caller_cannot_tell_existing_from_unknown_users(
    guarded: RunningServer, method: str
) -> None:
    # alice exists (no binding), nobody does not: a caller from a domain that is not ours
    # is never authenticated, so it must get the same answer for both.
    answers = {}
    with Prober(guarded.addr("udp")) as p:
        for user in ("alice", "nobody", "bob", "zed"):
            a = p.request(method, f"sip:{user}@{DOMAIN}", from_uri="sip:mallory@evil.example")
            answers[user] = (a.status, a.reason)
    assert len(set(answers.values())) == 1, answers


def test_invented_nonces_do_not_lock_a_source_out(guarded: RunningServer) -> None:
    with Prober(guarded.addr("udp"), "127.0.0.2") as p:
        for i in range(3 * MAX_FAILURES):
            forged = f"Zm9yZ2VkLW5vbmNlLXt7{i:04d}AAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            a = p.register("alice", DOMAIN, password="guess", nonce=forged)
            # A nonce we did not issue earns a fresh challenge, stale=true (RFC 7616).
            assert a.status == 401, (i, a.status, a.reason)
            assert "stale=true" in a.header("WWW-Authenticate")
        # ...and the real user behind that address still gets in.
        assert p.register("alice", DOMAIN, password="1234").status == 200


def test_nonce_issued_to_another_address_is_not_a_failure(guarded: RunningServer) -> None:
    # A spoofer cannot see the challenge sent to its victim's address; a nonce it got for
    # its own address is stale at any other.
    with Prober(guarded.addr("udp"), "127.0.0.3") as attacker:
        nonce = attacker.register("alice", DOMAIN).nonce()
    with Prober(guarded.addr("udp"), "127.0.0.4") as victim:
        for _ in range(2 * MAX_FAILURES):
            a = victim.register("alice", DOMAIN, password="guess", nonce=nonce)
            assert a.status == 401 and "stale=true" in a.header("WWW-Authenticate")
        assert victim.register("alice", DOMAIN, password="1234").status == 200


def test_many_addresses_share_one_account_budget(guarded: RunningServer) -> None:
    server = guarded.addr("udp")
    # The real user authenticated from its own address before the attack.
    with Prober(server, "127.0.0.9") as phone:
        assert phone.register("alice", DOMAIN, password="1234").status == 200
    # 30 addresses, one guess each; the right password is the 20th guess.
    outcomes = []
    for i in range(30):
        with Prober(server, f"127.0.1.{i + 1}") as p:
            guess = "1234" if i == 19 else f"{i:04d}"
            outcomes.append(p.register("alice", DOMAIN, password=guess))
    checked = [a for a in outcomes if a.reason != "Too Many Failed Attempts"]
    assert len(checked) == MAX_FAILURES, [(a.status, a.reason) for a in outcomes]
    assert all(a.status == 403 for a in outcomes), [(a.status, a.reason) for a in outcomes]
    # The address that proved the password recently is not locked out...
    with Prober(server, "127.0.0.9") as phone:
        assert phone.register("alice", DOMAIN, password="1234").status == 200
    # ...and other accounts are untouched.
    with Prober(server, "127.0.2.1") as other:
        assert other.register("bob", DOMAIN, password="s3cret").status == 200


def test_unknown_users_spend_a_budget_like_known_ones(guarded: RunningServer) -> None:
    server = guarded.addr("udp")
    reasons = {}
    for name in ("alice", "ghost"):
        seen = []
        for i in range(MAX_FAILURES + 2):
            with Prober(server, f"127.0.3.{len(reasons) * 50 + i + 1}") as p:
                a = p.register(name, DOMAIN, password=f"x{i}")
                seen.append((a.status, a.reason))
        reasons[name] = seen
    assert reasons["alice"] == reasons["ghost"], reasons


def pushes(emu: ApnsEmulator) -> int:
    return len(emu.pushes())


def push_contact(port: int, token: str) -> str:
    return f"<sip:alice@127.0.0.1:{port};pn-provider=apns;pn-prid={token};pn-param={PHONE_PARAM}>"


@pytest.mark.parametrize("require_auth", [False, True])
def test_push_spam_is_bounded(tmp_path: Path, require_auth: bool) -> None:
    with apns_emulator() as emu:
        text = auth_config(
            tmp_path,
            extra=f"""
[push]
hold_window = 0.3
max_per_device = 1.0
device_burst = 3
max_per_source = 60.0
source_burst = 10
require_auth_for_push = {"true" if require_auth else "false"}
{emu.config()}""",
        )
        cfg = write_config(tmp_path / "sipwake.toml", text)
        add_user(cfg, "alice", "1234")
        with serve(text, tmp_path) as server:
            addr = server.addr("udp")
            with Prober(addr, "127.0.0.20") as phone:
                contact = push_contact(phone.port, "ab" * 32)
                assert (
                    phone.register("alice", DOMAIN, password="1234", contact=contact).status == 200
                )
            answers = []
            with Prober(addr, "127.0.0.21") as spammer:
                for _ in range(20):
                    a = spammer.request(
                        "INVITE", f"sip:alice@{DOMAIN}", from_uri="sip:spam@evil.example"
                    )
                    answers.append((a.status, a.header("Warning")))
            sent = pushes(emu)
            assert server.alive()
    assert sent == (0 if require_auth else 3), answers
    refused = [a for a in answers if "Push budget exceeded" in a[1]]
    assert len(refused) == 20 - sent, answers
    assert all(status == 480 for status, _ in answers), answers


def test_slowloris_cannot_starve_new_clients(tmp_path: Path) -> None:
    text = auth_config(tmp_path, extra="[sip]\nmax_connections_per_ip = 10\nmessage_timeout = 1.0")
    with serve(text, tmp_path) as server:
        addr = server.addr("tcp")
        held = []
        for _ in range(30):
            s = socket.socket()
            s.bind(("127.0.0.40", 0))
            s.settimeout(5.0)
            s.connect(addr)
            s.sendall(b"O")  # the first byte of a message that never ends
            held.append(s)
        # A client from another address is served at once.
        with socket.create_connection(addr, source_address=("127.0.0.41", 0), timeout=5) as c:
            c.sendall(options_request(c.getsockname()))
            assert c.recv(4096).startswith(b"SIP/2.0 200 ")
        # Every trickling connection is gone within the message deadline (+ reaper tick).
        deadline = time.monotonic() + 5.0
        for s in held:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while s.recv(1024):
                    pass
            except ConnectionResetError:
                pass
            s.close()
        assert time.monotonic() < deadline
        assert server.alive()
        # The log lines come through the server's output pipe, read by another thread.
        assert wait_output_server(server, "max_connections_per_ip", 5), server_text(server)
        assert wait_output_server(server, "sip.message_timeout", 5), server_text(server)
        assert refused(server, "connection_limit") == 20
        assert refused(server, "message_timeout") == 10


def refused(server: RunningServer, reason: str) -> float:
    host, port = server.addr("api")
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf'^sipwake_refused_total{{reason="{reason}"}} (\S+)$', text, re.M)
    assert m is not None, reason
    return float(m.group(1))


def server_text(server: RunningServer) -> str:
    return "".join(server.output)


def options_request(local: tuple[str, int]) -> bytes:
    return (
        f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bKopt1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{DOMAIN}>;tag=1\r\n"
        f"To: <sip:{DOMAIN}>\r\n"
        "Call-ID: opt-1@probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_overload_sheds_new_calls_and_keeps_the_rest_flowing(tmp_path: Path) -> None:
    # A callee that never answers: every INVITE stays in progress, as under overload.
    text = loopback_config(
        domains=(DOMAIN,),
        extra="[auth]\nenabled = false\n[overload]\nmax_pending = 4\nretry_after = 7",
    )
    with serve(text, tmp_path) as server, Prober(server.addr("udp")) as callee:
        addr = server.addr("udp")
        contact = f"<sip:bob@127.0.0.1:{callee.port}>"
        assert callee.register("bob", DOMAIN, contact=contact).status == 200
        ringing = RingingCallee(callee)
        ringing.start()
        with Prober(addr, "127.0.0.50") as caller:
            invites = [
                caller.send("INVITE", f"sip:bob@{DOMAIN}", from_uri=f"sip:a@{DOMAIN}")
                for _ in range(10)
            ]
            shed = [caller.wait_final(s, timeout=1.0) for s in invites]
            refused = [a for a in shed if a is not None]
            # The first four are in progress (no final answer); the rest got 503 at once.
            assert len(refused) == 6, [a.status if a else None for a in shed]
            assert {a.status for a in refused} == {503}
            assert {a.header("Retry-After") for a in refused} == {"7"}
            # CANCEL, OPTIONS and the calls in progress keep flowing.
            options = caller.request("OPTIONS", f"sip:{DOMAIN}", from_uri=f"sip:a@{DOMAIN}")
            assert options.status == 200
            pending = [s for s, a in zip(invites, shed, strict=True) if a is None]
            for s in pending:
                assert caller.wait_final(caller.cancel(s)) is not None  # 200 to the CANCEL
                answer = caller.wait_final(s)
                assert answer is not None and answer.status == 487
            # Load gone: a new call is taken again.
            again = caller.send("INVITE", f"sip:bob@{DOMAIN}", from_uri=f"sip:a@{DOMAIN}")
            assert caller.wait_final(again, timeout=1.0) is None  # forwarded, ringing nowhere
            caller.wait_final(caller.cancel(again))
            assert caller.wait_final(again) is not None
        ringing.stop()
        assert server.alive()
        assert "overloaded, answering new requests 503" in server_text(server)

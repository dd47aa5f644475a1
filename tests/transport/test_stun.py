"""STUN Binding on the SIP UDP port (issue 10 item 6; RFC 5389, RFC 5626 §4.4.2)."""

from __future__ import annotations

import struct
import zlib

from sipwake.transport.stun import MAGIC_COOKIE, binding_response, is_stun, maybe_stun

TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")  # RFC 5769 §2.2 / §2.3


def request(txid: bytes = TXID, fingerprint: bool = False) -> bytes:
    head = struct.pack("!HHI12s", 0x0001, 8 if fingerprint else 0, MAGIC_COOKIE, txid)
    if not fingerprint:
        return head
    crc = (zlib.crc32(head) ^ 0x5354554E) & 0xFFFFFFFF
    return head + struct.pack("!HHI", 0x8028, 4, crc)


def test_ipv4_xor_mapped_address_matches_rfc5769() -> None:
    out = binding_response(request(), ("192.0.2.1", 32853))
    assert out is not None
    kind, length, cookie, txid = struct.unpack_from("!HHI12s", out)
    assert (kind, cookie, txid) == (0x0101, MAGIC_COOKIE, TXID)
    assert length == len(out) - 20 == 12
    # RFC 5769 §2.2, the XOR-MAPPED-ADDRESS of the sample IPv4 response.
    assert out[20:] == bytes.fromhex("0020000800 01a147e112a643".replace(" ", ""))


def test_ipv6_xor_mapped_address_matches_rfc5769() -> None:
    out = binding_response(request(), ("2001:db8:1234:5678:11:2233:4455:6677", 32853))
    assert out is not None
    assert out[20:] == bytes.fromhex(
        "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9".replace(" ", "")
    )


def test_fingerprint_answered_with_fingerprint() -> None:
    out = binding_response(request(fingerprint=True), ("192.0.2.1", 32853))
    assert out is not None
    assert struct.unpack_from("!H", out, 2)[0] == len(out) - 20 == 20
    attr, size, crc = struct.unpack_from("!HHI", out, len(out) - 8)
    assert (attr, size) == (0x8028, 4)
    assert crc == (zlib.crc32(out[:-8]) ^ 0x5354554E) & 0xFFFFFFFF


def test_anything_but_a_binding_request_gets_no_answer() -> None:
    good = request()
    for bad in (
        b"\0",  # a NUL keep-alive
        good[:19],  # short
        struct.pack("!H", 0x0011) + good[2:],  # a Binding Indication
        struct.pack("!H", 0x0101) + good[2:],  # a response
        good[:4] + b"\0\0\0\0" + good[8:],  # RFC 3489 (no magic cookie)
        good[:2] + struct.pack("!H", 4) + good[4:],  # length says more than is there
    ):
        assert binding_response(bad, ("192.0.2.1", 5060)) is None


def test_sip_never_looks_like_stun() -> None:
    for start in b"INVITE", b"SIP/2.0", b"OPTIONS", b"\r\n":
        assert not maybe_stun(start[0])
    assert maybe_stun(request()[0])


def test_is_stun_needs_the_cookie_and_a_matching_length() -> None:
    header = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, bytes(12))
    assert is_stun(header)
    assert not is_stun(header + b"\0\0\0\0")  # length field says 0
    assert not is_stun(b"\x00\xffgarbage that is not SIP\r\n\r\n")
    assert not is_stun(b"\0")

"""STUN Binding on the SIP UDP port: RFC 5626 §4.4.2 keep-alives (§8.4: the registrar's
edge answers them), RFC 5389 message format.

A UA using SIP outbound over UDP sends STUN Binding Requests on its registration's flow
to keep the NAT binding open and to learn when its public address changes. They arrive on
the SIP socket; the first two bits of a STUN message are zero (RFC 5389 §6), which no SIP
message can start with, so one byte tells them apart. Pure: bytes and an address in,
bytes out."""

from __future__ import annotations

import ipaddress
import struct
import zlib

MAGIC_COOKIE = 0x2112A442  # RFC 5389 §6
_HEADER = struct.Struct("!HHI12s")
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_XOR_MAPPED_ADDRESS = 0x0020  # RFC 5389 §15.2
_FINGERPRINT = 0x8028  # RFC 5389 §15.5
_FINGERPRINT_XOR = 0x5354554E


def maybe_stun(first_byte: int) -> bool:
    """Could a datagram starting with this byte be STUN? (SIP starts with a letter.)"""
    return first_byte < 0x04


def is_stun(data: bytes) -> bool:
    """A well-formed RFC 5389 message: header with the magic cookie and a length that
    matches the datagram (§6). Anything else starting with a low byte is not STUN, and goes
    where garbage goes (dropped and counted by the engine)."""
    if len(data) < 20:
        return False
    length: int
    cookie: int
    _, length, cookie, _ = _HEADER.unpack_from(data)
    return cookie == MAGIC_COOKIE and length % 4 == 0 and len(data) == 20 + length


def binding_response(data: bytes, remote: tuple[str, int]) -> bytes | None:
    """The Binding Success Response to a Binding Request ``data`` from ``remote``, with
    XOR-MAPPED-ADDRESS (and FINGERPRINT when the request had one, as RFC 5389 §7.3.1
    requires of the usage: RFC 5626 §8.2 clients send it). None for anything else
    (indications, responses, malformed or classic RFC 3489 messages): those get no answer
    (§7.3)."""
    if len(data) < 20:
        return None
    kind, length, cookie, txid = _HEADER.unpack_from(data)
    if kind != _BINDING_REQUEST or cookie != MAGIC_COOKIE:
        return None
    if length % 4 or len(data) != 20 + length:
        return None
    fingerprint = _has_fingerprint(data)
    attrs = _xor_mapped_address(remote, txid)
    size = len(attrs) + (8 if fingerprint else 0)
    out = _HEADER.pack(_BINDING_SUCCESS, size, MAGIC_COOKIE, txid) + attrs
    if fingerprint:
        crc = (zlib.crc32(out) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        out += struct.pack("!HHI", _FINGERPRINT, 4, crc)
    return out


def _has_fingerprint(data: bytes) -> bool:
    # FINGERPRINT is always the last attribute (§15.5).
    return len(data) >= 28 and struct.unpack_from("!HH", data, len(data) - 8) == (_FINGERPRINT, 4)


def _xor_mapped_address(remote: tuple[str, int], txid: bytes) -> bytes:
    """RFC 5389 §15.2: the port XORed with the cookie's high 16 bits, the address with the
    cookie (IPv4) or the cookie and transaction id (IPv6)."""
    host, port = remote
    ip = ipaddress.ip_address(host.strip("[]"))
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        xaddr = int(ip) ^ MAGIC_COOKIE
        value = struct.pack("!BBHI", 0, 0x01, xport, xaddr)
    else:
        key = int.from_bytes(struct.pack("!I", MAGIC_COOKIE) + txid, "big")
        value = struct.pack("!BBH", 0, 0x02, xport) + (int(ip) ^ key).to_bytes(16, "big")
    return struct.pack("!HH", _XOR_MAPPED_ADDRESS, len(value)) + value

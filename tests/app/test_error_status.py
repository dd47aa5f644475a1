"""Each ProtocolError subclass is answered on the wire with its own status and reason.

Compiled by mypyc, class-body overrides of an instance attribute's default are lost: the
three proxying errors once went out as 500. These tests hold in pure Python and compiled.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import sipwake
from sipwake.app.engine import make_error_response
from sipwake.policy.proxying import BadExtension, LoopDetected, TooManyHops
from sipwake.sip.codec import parse_message
from sipwake.sip.errors import MessageTooLarge, ParseError, ProtocolError, VersionNotSupported
from sipwake.sip.message import Response

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-errors\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: errors@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("err", "status", "reason"),
    [
        (TooManyHops("Max-Forwards is 0"), 483, "Too Many Hops"),
        (LoopDetected("via loop"), 482, "Loop Detected"),
        (BadExtension(["foo"]), 420, "Bad Extension"),
        (ParseError("bad CSeq"), 400, "Bad Request"),
        (MessageTooLarge("too big"), 513, "Message Too Large"),
        (VersionNotSupported("SIP/3.0"), 505, "Version Not Supported"),
        (ProtocolError("boom"), 500, "Server Internal Error"),
        (ProtocolError("busy", status=486, reason="Busy Here"), 486, "Busy Here"),
        (ParseError("odd", status=416), 416, "Bad Request"),
    ],
)
def test_wire_status_line(err: ProtocolError, status: int, reason: str) -> None:
    request = parse_message(INVITE)
    wire = make_error_response(request, err, to_tag="t1").serialise()
    assert wire.startswith(f"SIP/2.0 {status} {reason} (".encode())
    answer = parse_message(wire)
    assert isinstance(answer, Response) and answer.status == status


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_no_subclass_overrides_status_as_a_class_attribute() -> None:
    """A subclass states its answer as STATUS/REASON. A class-body ``status = 4xx`` type-checks
    but is silently dropped when compiled, so none may exist in any sipwake module."""
    for mod in pkgutil.walk_packages(sipwake.__path__, "sipwake."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    subclasses = _subclasses(ProtocolError)
    assert TooManyHops in subclasses
    for cls in subclasses:
        own = vars(cls)
        assert "status" not in own and "reason" not in own, cls.__qualname__

"""Fuzz target for the SIP parser (atheris / libFuzzer).

Invariant: ``parse_message`` returns a Request or Response, or raises ParseError, nothing
else; for a returned message ``validate()`` and every typed view also raise only ParseError,
and ``serialise()`` never raises. The stream framer obeys the same rule. The overload path's
byte scan (``sip/scan.py``) never raises, and where it and the parser both accept a
request they read the same method, To tag and top Via.

    python3 fuzz/fuzz_parse.py -max_total_time=60 tests/vectors/rfc4475 tests/vectors/extra

tests/sip/test_fuzz.py runs ``check`` briefly inside the test suite without atheris.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any

atheris: Any
try:
    atheris = importlib.import_module("atheris")
except ImportError:  # the test suite runs check() without it
    atheris = None

# Instrument only sipwake (coverage feedback where it matters); instrument_all() would
# spend ~10 s instrumenting every loaded module at start-up.
_instrument = (
    atheris.instrument_imports(include=["sipwake"])
    if atheris is not None and __name__ == "__main__"
    else contextlib.nullcontext()
)
with _instrument:
    from sipwake.sip.codec import Limits, StreamFramer, parse_message
    from sipwake.sip.errors import ParseError
    from sipwake.sip.message import Request, Response
    from sipwake.sip.scan import scan_request

# Smaller limits than the defaults so the fuzzer reaches them with short inputs.
SMALL = Limits(max_message_size=4096, max_headers=32, max_line_length=512)


def _views(msg: Request | Response) -> None:
    """Touch every typed view; each may raise only ParseError."""
    for view in (
        msg.validate,
        lambda: msg.call_id,
        lambda: msg.cseq,
        lambda: msg.vias,
        lambda: msg.from_,
        lambda: msg.to,
        lambda: msg.contacts,
        lambda: msg.routes,
        lambda: msg.record_routes,
        lambda: msg.max_forwards,
        lambda: msg.expires,
        lambda: msg.content_length,
    ):
        try:
            view()
        except ParseError:
            pass
    if isinstance(msg, Request):
        try:
            msg.ruri  # noqa: B018
        except ParseError:
            pass


def _scan_agrees(data: bytes, limits: Limits) -> None:
    head = scan_request(data, limits)
    if head is None:
        return
    try:
        msg = parse_message(data, limits)
        msg.validate()
    except ParseError:
        return  # the scan reads less than the parser checks (sip/scan.py)
    assert isinstance(msg, Request)
    assert (head.method, head.to_tag, head.via) == (msg.method, msg.to.tag, msg.top_via)


def check(data: bytes) -> None:
    """Raise AssertionError (or let a foreign exception escape) if the invariant breaks."""
    _scan_agrees(data, SMALL)
    _scan_agrees(data, Limits())
    for limits, stream in ((SMALL, False), (Limits(), False), (Limits(), True)):
        try:
            msg = parse_message(data, limits, stream=stream)
        except ParseError as exc:
            assert exc.status in (400, 505, 513), exc.status
            continue
        assert isinstance(msg, Request | Response)
        _views(msg)
        out = msg.serialise()
        assert isinstance(out, bytes)
        # What we write we can read back.
        roomy = Limits(max_message_size=len(out) + 1, max_headers=10**6, max_line_length=10**6)
        again = parse_message(out, roomy)
        assert again.start_line() == msg.start_line()
        assert again.body == msg.body
    framer = StreamFramer(SMALL)
    try:
        for i in range(0, len(data), 7):
            for item in framer.feed(data[i : i + 7]):
                if isinstance(item, bytes):
                    try:
                        parse_message(item, SMALL, stream=True)
                    except ParseError:
                        pass
    except ParseError:
        pass
    assert framer.buffered <= SMALL.max_message_size + 7


def TestOneInput(data: bytes) -> None:
    check(data)


def main() -> None:
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris")
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Parse micro-benchmark: `python3 bench/bench_parse.py [iterations]`.

Prints parses/s (best of 5 runs) for a realistic INVITE with SDP, a REGISTER with RFC 8599
push parameters, and a proxy's parse + edit + serialise of the INVITE (RFC 3261 §16.6: new
top Via, Max-Forwards - 1, Record-Route). Parse-only runs also read the typed views every
proxy touches (top Via, CSeq, Call-ID), so lazy parsing is not flattered.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from sipwake.sip.codec import parse_message

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 97 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:97 opus/48000/2\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@198.51.100.7:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"User-Agent: ExamplePhone/4.2\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(SDP)
) + SDP

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.50:53211;branch=z9hG4bKpn8599;rport;alias\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Bob" <sip:bob@example.com>;tag=pn1\r\n'
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b"Call-ID: register-pn.88d3@192.0.2.50\r\n"
    b"CSeq: 20 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.50:53211;transport=tls;pn-provider=apns;"
    b"pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.voip>;"
    b'+sip.instance="<urn:uuid:4b7f3e6c-1234-4d2b-9a2e-b6f2a1c3d4e5>";reg-id=1;expires=604800\r\n'
    b"Supported: outbound, path\r\n"
    b"Expires: 604800\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def parse_bare(data: bytes) -> Callable[[], object]:
    """Split into start line, header lines and body, nothing parsed further (the typed
    views are parsed lazily, when a layer reads them)."""

    def run() -> object:
        return parse_message(data)

    return run


def parse_only(data: bytes) -> Callable[[], object]:
    def run() -> object:
        msg = parse_message(data)
        return msg.top_via.branch, msg.cseq.seq, msg.call_id

    return run


def proxy_edit(data: bytes) -> Callable[[], object]:
    def run() -> object:
        msg = parse_message(data)
        _ = msg.top_via.branch, msg.cseq, msg.call_id
        mf = msg.max_forwards
        msg.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bKp1x7")
        msg.headers.set("Max-Forwards", str((mf if mf is not None else 70) - 1))
        msg.headers.prepend("Record-Route", "<sip:proxy.example.com;lr>")
        return msg.serialise()

    return run


def best_rate(fn: Callable[[], object], n: int, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    cases = [
        (f"parse INVITE+SDP ({len(INVITE)} B), bare", parse_bare(INVITE)),
        (f"parse REGISTER ({len(REGISTER)} B), bare", parse_bare(REGISTER)),
        (f"parse INVITE+SDP ({len(INVITE)} B)", parse_only(INVITE)),
        (f"parse REGISTER ({len(REGISTER)} B)", parse_only(REGISTER)),
        ("parse+edit+serialise INVITE", proxy_edit(INVITE)),
    ]
    print(f"{'case':42} {'per s':>10} {'us each':>8}   (best of 5 x {n})")
    for name, fn in cases:
        rate = best_rate(fn, n)
        print(f"{name:42} {rate:10,.0f} {1e6 / rate:8.2f}")
    print("(rows without 'bare' also read top Via, CSeq and Call-ID, as a proxy must)")


if __name__ == "__main__":
    main()

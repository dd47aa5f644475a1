"""Where a push-woken call's time goes, read off the wire: the legs of each call on loopback.

    python3 bench/push_legs.py --pcap legs.pcap -- \\
        .venv/bin/python bench/compare.py --rounds 1 --scenarios latency --systems kamailio
    python3 bench/push_legs.py --pcap legs.pcap          # read an existing capture

With a command, tcpdump (Debian ``tcpdump``, run as root) captures loopback while it runs;
then each push call of bench/probe.py (an INVITE to ``user<i>``, whose push carries the
64-hex token of ``i``, bench/wake_relay.py) is followed through the capture:

    a  INVITE in -> push POST out            server (sipwake or Kamailio)
    b  POST out -> wake REGISTER in, - 50 ms  the wake relay (the same for every system)
    c  wake REGISTER in -> INVITE out         server
    d  INVITE out -> 200 in                   the probe's callee
    e  200 in -> 200 out                      server

Timestamps are the kernel's, on the packets' way through ``lo``: no process is touched,
so the figures hold for Kamailio as for sipwake, and ``a + c + e`` is the time the server
itself added. The push must be plain HTTP (Kamailio's http_client, sipwake's webhook
provider); through the APNs emulator it is TLS and its token cannot be read."""

from __future__ import annotations

import argparse
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

WAKE_DELAY_US = 50_000.0  # bench/compare.py WAKE_DELAY
_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")
_CSEQ = re.compile(rb"(?im)^cseq[ \t]*:[ \t]*\d+[ \t]+(\w+)")
_TO_USER = re.compile(rb"(?im)^(?:to|t)[ \t]*:[^\r\n]*sip:user(\d+)@")
_INVITE_USER = re.compile(rb"INVITE sip:user(\d+)@")
_TOKEN = re.compile(rb"[0-9a-f]{64}")
LEGS = ("a", "b", "c", "d", "e")
NAMES = {
    "a": "INVITE in -> push out",
    "b": "push out -> wake REGISTER in, - 50 ms",
    "c": "wake REGISTER in -> INVITE out",
    "d": "INVITE out -> 200 in (callee)",
    "e": "200 in -> 200 out",
    "server": "a + c + e, the server's own",
    "total": "INVITE -> 200, - 50 ms",
}


def packets(path: Path) -> Iterator[tuple[float, int, bytes]]:
    """(µs, IP protocol, payload) of every IPv4 UDP/TCP packet with a payload in a
    classic pcap file (tcpdump -w), Ethernet or Linux cooked framing."""
    with path.open("rb") as f:
        head = f.read(24)
        nano = struct.unpack("<I", head[:4])[0] == 0xA1B23C4D
        link = struct.unpack("<I", head[20:24])[0]
        skip = {1: 14, 113: 16}.get(link, 0)
        while len(record := f.read(16)) == 16:
            sec, frac, length, _ = struct.unpack("<IIII", record)
            ip = f.read(length)[skip:]
            if not ip or ip[0] >> 4 != 4 or ip[9] not in (6, 17):
                continue
            l4 = ip[(ip[0] & 15) * 4 :]
            payload = l4[8:] if ip[9] == 17 else l4[(l4[12] >> 4) * 4 :]
            if payload:
                yield sec * 1e6 + (frac / 1000 if nano else frac), ip[9], payload


def legs(path: Path) -> dict[str, list[float]]:
    """Per leg, one value (µs) for every push call seen whole in the capture."""
    stamps: dict[int, dict[str, float]] = {}  # user -> event -> µs
    user_of: dict[bytes, int] = {}  # Call-ID -> user
    pushed: dict[int, float] = {}
    for t, proto, p in packets(path):
        if proto == 6:  # the push: the token's first sighting on TCP
            for m in _TOKEN.finditer(p):
                pushed.setdefault(int(m.group(0), 16), t)
            continue
        line = p.split(b"\r\n", 1)[0]
        cid = _CALL_ID.search(p)
        if line.startswith(b"INVITE sip:user") and cid:
            m = _INVITE_USER.match(line)
            if m is None:
                continue
            user = int(m.group(1))
            user_of[cid.group(1)] = user
            seen = stamps.setdefault(user, {})
            seen.setdefault("invite_out" if "invite_in" in seen else "invite_in", t)
        elif line.startswith(b"REGISTER") and (to := _TO_USER.search(p)):
            seen = stamps.get(int(to.group(1)), {})
            if "invite_in" in seen:
                seen.setdefault("register_in", t)
        elif line.startswith(b"SIP/2.0 200") and cid and cid.group(1) in user_of:
            cseq = _CSEQ.search(p)
            if cseq and cseq.group(1) == b"INVITE":
                seen = stamps[user_of[cid.group(1)]]
                seen.setdefault("ok_out" if "ok_in" in seen else "ok_in", t)
    out: dict[str, list[float]] = {leg: [] for leg in (*LEGS, "server", "total")}
    for user, s in stamps.items():
        push = pushed.get(user)
        if push is None or len(s) < 5:
            continue  # a plain INVITE (no push), or a call cut off by the capture
        values = {
            "a": push - s["invite_in"],
            "b": s["register_in"] - push - WAKE_DELAY_US,
            "c": s["invite_out"] - s["register_in"],
            "d": s["ok_in"] - s["invite_out"],
            "e": s["ok_out"] - s["ok_in"],
        }
        values["server"] = values["a"] + values["c"] + values["e"]
        values["total"] = s["ok_out"] - s["invite_in"] - WAKE_DELAY_US
        for leg, value in values.items():
            out[leg].append(value)
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(result: dict[str, list[float]]) -> str:
    rows = [f"{len(result['total'])} push calls; µs", "| leg | p50 | p90 | p99 | max |"]
    rows.append("|---|---|---|---|---|")
    for leg in (*LEGS, "server", "total"):
        v = result[leg]
        if not v:
            continue
        rows.append(
            f"| {leg}: {NAMES[leg]} | {quantile(v, 0.5):,.0f} | {quantile(v, 0.9):,.0f} | "
            f"{quantile(v, 0.99):,.0f} | {max(v):,.0f} |"
        )
    return "\n".join(rows)


def capture(pcap: Path, command: list[str]) -> int:
    """Run ``command`` with tcpdump writing loopback's UDP and TCP to ``pcap``."""
    dump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-s", "0", "-B", "131072", "-w", str(pcap), "udp or tcp"],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # tcpdump has the interface open before the first packet
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        time.sleep(0.5)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--pcap", type=Path, required=True, help="capture file (written if a command follows)"
    )
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to capture")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and (rc := capture(args.pcap, command)) != 0:
        print(f"command exited {rc}", file=sys.stderr)
        return rc
    print(report(legs(args.pcap)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``sipwake phone``: the command line of the simulated device (emulate/phone.py)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

from sipwake.emulate.phone import ACTIONS, Phone, PhoneConfig
from sipwake.emulate.ua import TRANSPORTS


def _hostport(text: str, default_port: int = 5060) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host:
        raise argparse.ArgumentTypeError(f"bad host:port {text!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    d = PhoneConfig(server=("127.0.0.1", 5060))
    p = argparse.ArgumentParser(
        prog="sipwake phone",
        description="A simulated mobile phone: registers with RFC 8599 push parameters, "
        "sleeps, and wakes up when the APNs/FCM emulator forwards a push to it.",
    )
    p.add_argument("--server", type=_hostport, default=("127.0.0.1", 5060), help="host:port")
    p.add_argument("--transport", choices=TRANSPORTS, default="udp")
    p.add_argument("--user", default=d.user)
    p.add_argument("--domain", default=d.domain)
    p.add_argument("--password", default="")
    p.add_argument("--provider", default=d.provider, help="pn-provider (apns, fcm, ...)")
    p.add_argument("--token", default=None, help="pn-prid (default: 64 random hex digits)")
    p.add_argument("--param", default=d.param, help="pn-param (APNs: TEAMID.bundle.voip)")
    p.add_argument("--instance", default=None, help="+sip.instance (default: a new urn:uuid)")
    p.add_argument("--expires", type=int, default=d.expires)
    p.add_argument("--wake-delay", type=float, default=d.wake_delay)
    p.add_argument("--action", choices=ACTIONS, default=d.action)
    p.add_argument("--answer-after", type=float, default=d.answer_after)
    p.add_argument("--hangup-after", type=float, default=None)
    p.add_argument("--push-listen", type=lambda t: _hostport(t, 0), default=d.push_listen)
    p.add_argument("--ca-file", default="", help="CA to trust for TLS")
    p.add_argument("--tls-name", default="", help="TLS server name (default: server host)")
    p.add_argument("--decline-reason", choices=("busy", "decline"), default=d.decline_reason)
    p.add_argument("--follow-push-server", action="store_true")
    p.add_argument(
        "--wake-server", type=_hostport, default=None, help="host:port to register to on waking"
    )
    p.add_argument("--stay-awake", action="store_true", help="do not sleep after registering")
    p.add_argument(
        "--frozen",
        action="store_true",
        help="with --stay-awake: answer nothing on the connection until pushed",
    )
    p.add_argument("--run-for", type=float, default=0.0, help="seconds to run (0: until ^C)")
    return p


def config_from_args(args: argparse.Namespace) -> PhoneConfig:
    extra: dict[str, Any] = {}
    if args.token:
        extra["token"] = args.token
    if args.instance:
        extra["instance"] = args.instance
    return PhoneConfig(
        server=args.server,
        transport=args.transport,
        user=args.user,
        domain=args.domain,
        password=args.password,
        provider=args.provider,
        param=args.param,
        expires=args.expires,
        wake_delay=args.wake_delay,
        action=args.action,
        answer_after=args.answer_after,
        hangup_after=args.hangup_after,
        push_listen=args.push_listen,
        ca_file=args.ca_file,
        tls_name=args.tls_name,
        decline_reason=args.decline_reason,
        follow_push_server=args.follow_push_server,
        wake_server=args.wake_server,
        frozen=args.frozen,
        **extra,
    )


async def _run(args: argparse.Namespace) -> int:
    phone = Phone(config_from_args(args))
    t0 = time.monotonic()
    phone.on_event = lambda t, what: print(f"{(t - t0) * 1000:9.1f} ms  {what}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await phone.start()
    cfg = phone.config
    print(f"push url: {phone.push_url}", flush=True)
    print(f"pn-provider={cfg.provider} pn-prid={cfg.token} pn-param={cfg.param}", flush=True)
    print(f"+sip.instance={cfg.instance}", flush=True)
    try:
        status = await phone.register()
        if not 200 <= status < 300:
            print(f"REGISTER failed: {status}", file=sys.stderr)
            return 1
        if not args.stay_awake:
            await phone.sleep()
        try:
            await asyncio.wait_for(stop.wait(), args.run_for or None)
        except TimeoutError:
            pass
        return 0
    except OSError as exc:
        print(f"cannot reach {cfg.server}: {exc}", file=sys.stderr)
        return 1
    finally:
        await phone.close()


def main(argv: list[str] | None = None) -> int:
    """``sipwake phone``: run a simulated phone until interrupted (or ``--run-for``)."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

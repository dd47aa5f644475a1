"""The ``sipwake`` command line.

Exit codes: 0 success, 1 a bad configuration or a runtime failure (message on stderr, no
traceback), 2 bad arguments (click prints usage), 130 interrupted.

The server and demo are imported inside their commands: ``check-config`` and ``--help``
must stay fast and work even when an optional dependency of the server is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

import click
import msgspec

from sipwake import __version__
from sipwake.buildinfo import describe
from sipwake.cli_admin import bindings, calls, push
from sipwake.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    ConfigError,
    SetupError,
    load_config,
    workers_problem,
)
from sipwake.logs import setup_logging

__all__ = ["main"]


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(1)


def _load(path: str | None) -> Config:
    if path is None:
        return Config()
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc))


def _run_loop(main_coro: Coroutine[Any, Any, None], *, use_uvloop: bool) -> None:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass  # optional accelerator (extra [fast]); the stdlib loop is fine without it
        else:
            uvloop.run(main_coro)
            return
    asyncio.run(main_coro)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    "-V",
    "--version",
    prog_name="sipwake",
    message=f"%(prog)s %(version)s, {describe()}",
)
def main() -> None:
    """SIP registrar and proxy that wakes sleeping mobile apps with push (RFC 8599)."""


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="FILE",
    envvar="SIPWAKE_CONFIG",
    help="TOML configuration file (default: built-in development settings).",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="Override server.log_level.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), help="Override server.log_format.")
@click.option(
    "--no-uvloop", is_flag=True, help="Use the stdlib event loop even if uvloop is installed."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Worker processes sharing the ports (overrides server.workers; >1 needs Redis).",
)
@click.option("--worker", "worker_slot", hidden=True, help="Internal: run as worker I/N.")
def serve(  # noqa: PLR0917 (click passes options as keywords; one per option)
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    no_uvloop: bool,
    workers: int | None,
    worker_slot: str | None,
) -> None:
    """Run the registrar and proxy until interrupted."""
    config = _load(config_path)
    overrides = {"log_level": log_level, "log_format": log_format}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        server_cfg = msgspec.structs.replace(config.server, **overrides)
        config = msgspec.structs.replace(config, server=server_cfg)
    count = workers if workers is not None else config.server.workers
    if worker_slot is None and count > 1:
        problem = workers_problem(config, count)
        if problem is not None:
            raise click.UsageError(problem)
        import sys

        from sipwake.workers import supervise

        argv = [sys.executable, "-m", "sipwake.cli", "serve"]
        if config_path is not None:
            argv += ["-c", config_path]
        for flag, value in (("--log-level", log_level), ("--log-format", log_format)):
            if value is not None:
                argv += [flag, value]
        if no_uvloop:
            argv.append("--no-uvloop")
        raise SystemExit(supervise(argv, count))
    setup_logging(config.server.log_level, config.server.log_format)

    from sipwake.process import run
    from sipwake.server import WorkerSlot

    slot = None
    if worker_slot is not None:
        index, _, total = worker_slot.partition("/")
        slot = WorkerSlot(int(index), int(total))
    try:
        _run_loop(run(config, slot, config_path), use_uvloop=not no_uvloop)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except SetupError as exc:
        _fail(exc.located(config_path or "built-in config"))
    except (ConfigError, OSError, ValueError) as exc:
        # Unreadable certificate, address already in use, a node id already in use, ...:
        # an operator error, not a bug.
        _fail(f"sipwake: {exc}")


@main.command("check-config")
@click.argument("file", metavar="FILE")
def check_config(file: str) -> None:
    """Validate FILE, load every file it names, and print what it configures."""
    from sipwake.preflight import preflight

    config = _load(file)
    try:
        loaded = preflight(config)
    except SetupError as exc:
        _fail(exc.located(file))
    click.echo(f"{file}: OK")
    for line in summary(config, loaded.credentials):
        click.echo(f"  {line}")


def summary(config: Config, credentials: Sequence[Any] = ()) -> list[str]:
    """What a configuration sets up, one item a line (check-config, the reload log)."""
    out = [f"domains: {', '.join(config.server.domains)}"]
    for lst in config.listen:
        host = f"[{lst.host}]" if ":" in lst.host else lst.host
        line = f"listen: {lst.transport} {host}:{lst.port}"
        if lst.advertise:
            line += f" (advertised as {lst.advertise})"
        out.append(line)
    out.append(f"storage: {config.storage.redacted_url()}")
    auth = config.auth
    if auth.enabled:
        realm = auth.realm or config.server.domains[0]
        line = f"auth: digest, realm {realm}, {'/'.join(auth.algorithms)}"
        if auth.trusted:
            line += f", trusted {', '.join(auth.trusted)}"
        if not auth.secret:
            line += ", random secret (set auth.secret for several nodes)"
        out.append(line)
    else:
        out.append("auth: off (anyone may register any user of our domains)")
    push = config.push
    for a in push.apns:
        mode = f"token key {a.key_id}" if a.key_file else "certificate"
        where = a.base_url or a.environment
        out.append(f"push: apns {a.name}: {a.bundle_id}.voip, {mode}, {where}")
    for f in push.fcm:
        app = f", app {f.app_id}" if f.app_id else ""
        project = f.project_id or "from the service account"
        out.append(f"push: fcm {f.name}: project {project}{app}, {f.base_url}")
    for w in push.webpush:
        out.append(f"push: webpush {w.name}: subject {w.subject}")
    for h in push.webhook:
        out.append(f"push: webhook {h.provider}: {h.url}")
    if not push.configured:
        out.append("push: none configured (devices with push parameters get 555)")
    else:
        out.append(f"push: hold {push.hold_window:g} s, then {push.unanswered_status}")
    for cred in credentials:
        out.append(f"credential: {cred.key}: {cred.what}")
    edge = config.edge
    if edge is None:
        out.append("edge: off (sipwake is the registrar)")
    else:
        mode = "Path (RFC 3327)" if edge.use_path else "contact rewrite"
        out.append(
            f"edge: upstream {edge.upstream}, registers for {edge.upstream_expires} s, "
            f"refresh push {edge.refresh_before} s before, {mode}, credentials {edge.credentials}"
        )
    api = config.api
    if api.enabled:
        scheme = "https" if api.tls else "http"
        host = f"[{api.host}]" if ":" in api.host else api.host
        admin = "admin on (bearer token)" if api.admin_token else "admin off (no admin_token)"
        out.append(f"api: {scheme}://{host}:{api.port}, {admin}")
    else:
        out.append("api: off")
    return out


@main.command("init-config")
@click.argument("file", metavar="[FILE]", default="sipwake.toml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def init_config(file: str, force: bool) -> None:
    """Write the sample configuration (every key, its default and meaning) to FILE."""
    import importlib.resources
    import os

    sample = (importlib.resources.files("sipwake") / "sipwake.sample.toml").read_bytes()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        # 0600: the file will hold auth.secret and api.admin_token once edited.
        fd = os.open(file, flags, 0o600)
    except FileExistsError:
        _fail(f"{file}: exists; use --force to overwrite it")
    except OSError as exc:
        _fail(f"{file}: cannot write: {exc.strerror or exc}")
    with os.fdopen(fd, "wb") as f:
        f.write(sample)
    click.echo(f"{file}: written; edit it, then: sipwake check-config {file}")


@main.command("vapid-keygen")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def vapid_keygen(file: str, force: bool) -> None:
    """Make a VAPID key pair (RFC 8292, P-256): the private key goes to FILE (PEM, 0600,
    for [[push.webpush]] vapid_private_key_file); the public key is printed (base64url),
    the applicationServerKey web apps subscribe with and REGISTER 200s carry as
    +sip.vapid (RFC 8599 §12)."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sipwake.push.webpush import load_vapid_key

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(file, flags, 0o600)
    except FileExistsError:
        _fail(f"{file}: exists; use --force to overwrite it")
    except OSError as exc:
        _fail(f"{file}: cannot write: {exc.strerror or exc}")
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    # Read back the way the server will, so what is printed is what REGISTERs will carry.
    click.echo(load_vapid_key(file).public_key_b64)


@main.command()
@click.option("--json", "json_output", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--transport",
    type=click.Choice(["udp", "tcp"]),
    default="udp",
    show_default=True,
    help="How the simulated phone connects to sipwake.",
)
def demo(json_output: bool, transport: str) -> None:
    """Run a self-contained wake-up demo (server, push emulator and phone in one process)."""
    from sipwake.emulate.demo import main as run_demo

    raise SystemExit(run_demo(json_output=json_output, transport=transport))


_CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="SIPWAKE_CONFIG",
    help="Configuration file (its [storage] url says where users live).",
)


def _with_stores(config: Config, action: Any, source: str | None = None) -> Any:
    """Open the configured stores, run ``action(stores)``, close them."""
    from sipwake.storage import open_stores

    if config.storage.scheme == "memory":
        # The store would die with this command: "saved" would be a lie.
        _fail(
            f"{source or 'built-in config'}: storage.url: memory:// keeps nothing once this "
            "command exits; users and bindings need a sqlite: or redis: store"
        )

    async def run() -> Any:
        stores = await open_stores(config.storage.url, node_id="cli")
        try:
            return await action(stores)
        finally:
            await stores.close()

    return asyncio.run(run())


@main.group()
def user() -> None:
    """Manage digest credentials (RFC 3261 §22). Only HA1 hashes are stored."""


@user.command("add")
@click.argument("username")
@_CONFIG_OPTION
@click.option("--realm", help="Digest realm (default: auth.realm or the first domain).")
@click.password_option("--password", help="Password (prompted for when omitted).")
def user_add(username: str, config_path: str | None, realm: str | None, password: str) -> None:
    """Add USERNAME, or replace its password."""
    from sipwake.policy.auth import ha1
    from sipwake.storage import User

    config = _load(config_path)
    realm = realm or config.auth.realm or config.server.domains[0]
    entry = User(
        username=username,
        realm=realm,
        ha1_md5=ha1(username, realm, password, "MD5"),
        ha1_sha256=ha1(username, realm, password, "SHA-256"),
    )
    _with_stores(config, lambda stores: stores.users.put_user(entry), config_path)
    click.echo(f"{username}@{realm}: saved")


@user.command("remove")
@click.argument("username")
@_CONFIG_OPTION
@click.option("--realm", help="Digest realm (default: auth.realm or the first domain).")
def user_remove(username: str, config_path: str | None, realm: str | None) -> None:
    """Remove USERNAME."""
    config = _load(config_path)
    realm = realm or config.auth.realm or config.server.domains[0]
    removed = _with_stores(
        config, lambda stores: stores.users.remove_user(username, realm), config_path
    )
    if not removed:
        _fail(f"{username}@{realm}: no such user")
    click.echo(f"{username}@{realm}: removed")


@user.command("list")
@_CONFIG_OPTION
@click.option("--realm", help="Only this realm.")
def user_list(config_path: str | None, realm: str | None) -> None:
    """List users (name and realm; never the hashes)."""
    config = _load(config_path)
    users = _with_stores(config, lambda stores: stores.users.list_users(realm), config_path)
    for u in users:
        click.echo(f"{u.username}@{u.realm}{'  (disabled)' if u.disabled else ''}")


@main.group()
def messages() -> None:
    """SIP MESSAGEs stored for sleeping devices (read-only)."""


@messages.command("list")
@_CONFIG_OPTION
@click.option("--aor", help="Only this address-of-record, one line per message.")
def messages_list(config_path: str | None, aor: str | None) -> None:
    """Users with pending messages and how many; with --aor, that user's messages."""
    import time

    from sipwake.storage.inbox import admin_view

    config = _load(config_path)
    view = _with_stores(config, lambda stores: admin_view(stores.messages, aor, time.time()))
    if aor is None:
        for user_aor, count in view["users"].items():
            click.echo(f"{user_aor}  {count}")
        return
    for row in view["messages"]:
        stored = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["stored_at"]))
        devices = ",".join(row["devices"])
        click.echo(
            f"{row['id']}  {stored}Z  from {row['sender']}  {row['content_type']}  "
            f"{row['size']} bytes  pending for {devices}"
        )


_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@main.group()
def emulate() -> None:
    """Run a push service emulator (for tests, demos and app development)."""


@emulate.command("apns", context_settings=_PASSTHROUGH)
@click.pass_context
def emulate_apns(ctx: click.Context) -> None:
    """APNs over HTTP/2 + TLS with JWT checks (options: sipwake emulate apns --help)."""
    from sipwake.emulate.apns import main as apns_main

    raise SystemExit(apns_main(ctx.args))


@emulate.command("fcm", context_settings=_PASSTHROUGH)
@click.pass_context
def emulate_fcm(ctx: click.Context) -> None:
    """FCM HTTP v1 with OAuth2 checks (options: sipwake emulate fcm --help)."""
    from sipwake.emulate.fcm import main as fcm_main

    raise SystemExit(fcm_main(ctx.args))


@main.command("phone", context_settings=_PASSTHROUGH)
@click.pass_context
def phone(ctx: click.Context) -> None:
    """A simulated device: registers with a push token, sleeps, wakes on push, answers or
    declines (options: sipwake phone --help)."""
    from sipwake.emulate.phone_cli import main as phone_main

    raise SystemExit(phone_main(ctx.args))


main.add_command(bindings)
main.add_command(calls)
main.add_command(push)


if __name__ == "__main__":
    main()

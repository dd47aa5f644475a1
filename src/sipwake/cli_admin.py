"""``sipwake bindings|calls|push``: the admin API from the command line.

Each command is one HTTP request to a running server's ``/admin`` routes (api/admin.py), so
it sees what the server sees, whatever the store, and works against a remote node. ``--api``
and ``--token`` default from the configuration file (``api.host``/``port``/``tls`` and
``api.admin_token``); ``--json`` prints the server's answer as it came.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

import click

from sipwake.config import Config, ConfigError, load_config

__all__ = ["bindings", "calls", "push"]


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(1)


def _api_options(fn: Any) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")(fn)
    fn = click.option(
        "--token", envvar="SIPWAKE_ADMIN_TOKEN", help="Admin bearer token (api.admin_token)."
    )(fn)
    fn = click.option("--api", "api_url", metavar="URL", help="e.g. http://127.0.0.1:8080")(fn)
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar="SIPWAKE_CONFIG",
        help="Configuration file giving the API address and token.",
    )(fn)


class _Client:
    def __init__(self, config_path: str | None, api_url: str | None, token: str | None) -> None:
        config = Config()
        if config_path is not None:
            try:
                config = load_config(config_path)
            except ConfigError as exc:
                _fail(str(exc))
        api = config.api
        if api_url is None:
            host = "127.0.0.1" if api.host in ("0.0.0.0", "::") else api.host
            host = f"[{host}]" if ":" in host else host
            api_url = f"{'https' if api.tls else 'http'}://{host}:{api.port}"
        self.base = api_url.rstrip("/")
        self.token = token if token is not None else api.admin_token
        if not self.token:
            _fail("no admin token: give --token or set api.admin_token in the config (-c)")
        # The API's certificate is usually our own (tls.cert_file): trust tls.ca_file too.
        self.ssl = ssl.create_default_context(cafile=config.tls.ca_file or None)

    def call(self, method: str, path: str, query: dict[str, str] | None = None) -> Any:
        url = self.base + path + (f"?{urlencode(query)}" if query else "")
        req = urllib.request.Request(
            url, method=method, headers={"authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.ssl) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            _fail(f"{method} {url}: {exc.code} {detail}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            _fail(f"{method} {url}: cannot reach the API: {reason}")


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_bindings(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no bindings")
    for b in rows:
        push = b.get("push") or {}
        via = (b.get("flow") or {}).get("transport", "")
        line = f"{b['aor']}  {b['contact']}  expires in {b.get('expires_in', '?')} s"
        if push:
            line += f"  push {push.get('provider')}"
        if b.get("instance"):
            line += f"  instance {b['instance']}"
        if via:
            line += f"  via {via}"
        click.echo(line)


@click.group()
def bindings() -> None:
    """List or remove registrations (through the admin API)."""


@bindings.command("list")
@click.argument("aor", required=False)
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@_api_options
def bindings_list(  # noqa: PLR0917
    aor: str | None,
    limit: int,
    offset: int,
    config_path: str | None,
    api_url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """List AOR's bindings (a bare user name means our first domain), or every binding."""
    client = _Client(config_path, api_url, token)
    if aor:
        answer = client.call("GET", "/admin/bindings", {"aor": aor})
    else:
        query = {"offset": str(offset), "limit": str(limit)}
        answer = client.call("GET", "/admin/bindings", query)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    _print_bindings(answer["bindings"])
    if answer.get("next") is not None:
        click.echo(f"more: --offset {answer['next']}")


@bindings.command("remove")
@click.argument("aor")
@click.option("--instance", default="", help="Only this device (+sip.instance).")
@_api_options
def bindings_remove(  # noqa: PLR0917
    aor: str,
    instance: str,
    config_path: str | None,
    api_url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Remove AOR's bindings (or one device's): it is no longer pushed or called."""
    client = _Client(config_path, api_url, token)
    query = {"aor": aor, **({"instance": instance} if instance else {})}
    answer = client.call("DELETE", "/admin/bindings", query)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    removed = answer["removed"]
    click.echo(f"{answer['aor']}: removed {len(removed)} binding(s)")
    for contact in removed:
        click.echo(f"  {contact}")
    if not removed:
        raise SystemExit(1)


@click.group()
def calls() -> None:
    """Held and recent calls, and one call's wake-up timeline (through the admin API)."""


@calls.command("list")
@_api_options
def calls_list(
    config_path: str | None, api_url: str | None, token: str | None, as_json: bool
) -> None:
    """Held calls, then recently finished ones, newest first."""
    answer = _Client(config_path, api_url, token).call("GET", "/admin/calls")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"held: {len(answer['calls'])}")
    for c in answer["calls"]:
        devices = c.get("devices") or {}
        click.echo(f"  {c['call_id']}  {c.get('aor', '')}  {len(devices)} device(s)")
    click.echo(f"recent: {len(answer.get('recent', []))}")
    for c in answer.get("recent", []):
        click.echo(
            f"  {c['call_id']}  {_when(c.get('started'))}  {c.get('aor', '')}  "
            f"{c.get('status', '-')}  {c.get('duration_ms', '-')} ms"
        )


@calls.command("show")
@click.argument("call_uuid", metavar="UUID")
@_api_options
def calls_show(
    call_uuid: str, config_path: str | None, api_url: str | None, token: str | None, as_json: bool
) -> None:
    """One call's timeline: every event in ms from the INVITE."""
    answer = _Client(config_path, api_url, token).call("GET", f"/admin/calls/{quote(call_uuid)}")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(
        f"call {answer['call_id']}  {answer.get('aor', '')}  sip call-id "
        f"{answer.get('sip_call_id', '')}  final {answer.get('status', '-')}"
    )
    for e in answer.get("events", []):
        who = f"  [{e['device']}]" if e.get("device") else ""
        click.echo(f"  {e['t_ms']:>9.1f} ms  {e['event']}{who}  {e.get('detail', '')}")


@click.group()
def push() -> None:
    """Push tools (through the admin API)."""


@push.command("test")
@click.argument("aor")
@_api_options
def push_test(
    aor: str, config_path: str | None, api_url: str | None, token: str | None, as_json: bool
) -> None:
    """Send a test push to each device of AOR and print each provider's answer."""
    answer = _Client(config_path, api_url, token).call("POST", "/admin/push-test", {"aor": aor})
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    results = answer["results"]
    if not results:
        _fail(f"{answer['aor']}: no device with a push target")
    for r in results:
        detail = r.get("reason") or r.get("provider_id") or ""
        latency = f"{r['latency_ms']} ms" if "latency_ms" in r else ""
        click.echo(f"{r['device']}  {r['provider']}  {r['outcome']}  {detail}  {latency}")
    if not all(r.get("ok") for r in results):
        raise SystemExit(1)

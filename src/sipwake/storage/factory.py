"""Open the stores named by a URL (the ``storage.url`` config key).

==========================================================  ================================
``memory://``                                               in-process dicts, nothing kept
``sqlite:///var/lib/sipwake/sipwake.db``                    absolute path
``sqlite:var/sipwake.db``                                   path relative to the working
``sqlite://var/sipwake.db``                                 directory (either form)
``sqlite:///path.db?synchronous=full``                      fsync every commit (sqlite.py)
``redis://[[user]:password@]host:port/db``                  plain TCP
``rediss://...``                                            TLS (redis-py ``ssl_*`` query
                                                            options apply)
``redis+sentinel://[[user]:password@]h1:26379,h2:26379/service/db``
                                                            master of ``service`` found via
                                                            Sentinel
==========================================================  ================================

SQLite paths: ``sqlite:`` followed by a path, with or without ``//``. After ``sqlite:`` or
``sqlite://``, a path starting with ``/`` is absolute and anything else is relative to the
working directory. So ``sqlite:///x`` is ``/x`` (as in a file: URL, RFC 8089) and both
``sqlite:x`` (config.py's form) and ``sqlite://x`` are ``./x``; unlike SQLAlchemy, where
``sqlite:////x`` is needed for an absolute path.

Redis URLs take ``prefix`` (key prefix, default ``sipwake:``), ``timeout`` (seconds,
connect and per command, default 2) and ``max_connections`` (pool size per process,
default 64) in the query; redis+sentinel also takes
``sentinel_password``. Unknown query keys are an error rather than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from .base import Stores
from .inbox import MemoryMessageStore
from .memory import MemoryStore
from .redis import DEFAULT_PREFIX, RedisStore
from .redis_cluster import RedisCluster
from .redis_inbox import RedisMessageStore
from .sqlite import SQLiteStore
from .sqlite_cluster import SQLiteCluster
from .sqlite_inbox import SQLiteMessageStore

DEFAULT_REDIS_TIMEOUT = 2.0
DEFAULT_MAX_CONNECTIONS = 64  # per process
SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+sentinel")


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


async def open_stores(url: str, *, node_id: str) -> Stores:
    """Open the backend named by ``url``. ``node_id`` names this node to the backend
    (the Redis CLIENT SETNAME, visible in CLIENT LIST when debugging a cluster).

    Raises ValueError for a malformed URL or unknown scheme, StorageUnavailable /
    StorageError if the backend cannot be opened."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    scheme = m.group(1).lower() if m else ""
    if scheme == "memory":
        mem = MemoryStore()
        return Stores(bindings=mem, users=mem, closer=mem.close, messages=MemoryMessageStore())
    if scheme == "sqlite":
        rest = url[len("sqlite:") :]
        path, options = _split_query(rest[2:] if rest.startswith("//") else rest)
        synchronous = options.pop("synchronous", "normal")
        _no_more(options, url)
        if not path:
            raise ValueError(f"storage URL {url!r}: no database path after 'sqlite:'")
        sql = SQLiteStore.open(path, synchronous=synchronous)
        return Stores(
            bindings=sql,
            users=sql,
            closer=sql.close,
            cluster=SQLiteCluster(sql),
            messages=SQLiteMessageStore(sql),
        )
    if scheme in ("redis", "rediss", "redis+sentinel"):
        red = _open_redis(url, scheme, node_id)
        return Stores(
            bindings=red,
            users=red,
            closer=red.close,
            cluster=RedisCluster(red.client, prefix=red.prefix),
            messages=RedisMessageStore(red.client, prefix=red.prefix),
        )
    raise ValueError(
        f"storage URL {url!r}: unknown scheme {scheme!r}; expected one of "
        + ", ".join(s + "://" for s in SCHEMES)
    )


def _split_query(rest: str) -> tuple[str, dict[str, str]]:
    path, _, query = rest.partition("?")
    return path, dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))


def _no_more(options: dict[str, str], url: str) -> None:
    if options:
        raise ValueError(f"storage URL {url!r}: unknown option(s) {', '.join(sorted(options))}")


def _client_name(node_id: str) -> str:
    # CLIENT SETNAME rejects spaces and newlines.
    return "sipwake-" + re.sub(r"[^A-Za-z0-9._:-]", "_", node_id)


def _common_kwargs(options: dict[str, str], node_id: str) -> dict[str, Any]:
    timeout = float(options.pop("timeout", DEFAULT_REDIS_TIMEOUT))
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # redis-py's default retries 10 times with backoff up to 1 s, so an outage
        # would stall each request for seconds before the 503. One quick retry covers
        # the common case of a pooled connection that a Redis restart closed.
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
        "client_name": _client_name(node_id),
    }


def _open_redis(url: str, scheme: str, node_id: str) -> RedisStore:
    base, options = _split_query(url)
    prefix = options.pop("prefix", DEFAULT_PREFIX)
    max_connections = int(options.pop("max_connections", DEFAULT_MAX_CONNECTIONS))
    kwargs = _common_kwargs(options, node_id)
    if scheme != "redis+sentinel":
        # Remaining query options (ssl_cert_reqs, ssl_ca_certs, ...) are redis-py's own.
        # A blocking pool: under a burst, a request waits (up to the command timeout) for
        # a free connection instead of failing at once with "Too many connections", which
        # redis-py's default pool raises past 100 (seen at 700 push-woken calls/s).
        pool = aioredis.BlockingConnectionPool.from_url(
            base + ("?" + urlencode(options) if options else ""),
            max_connections=max_connections,
            timeout=kwargs["socket_timeout"],
            **kwargs,
        )
        return RedisStore(aioredis.Redis.from_pool(pool), prefix=prefix)
    sentinel_password = options.pop("sentinel_password", None)
    _no_more(options, url)
    target = parse_sentinel_url(base)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if sentinel_password is not None:
        sentinel_kwargs["password"] = sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
        list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs
    )
    client = sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        max_connections=max_connections,
    )
    return RedisStore(client, prefix=prefix, on_close=sentinel.aclose)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[[user]:pass@]host[:port][,host[:port]...]/service[/db]``;
    the Sentinel port defaults to 26379. IPv6 hosts go in brackets."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "redis+sentinel":
        raise ValueError(f"not a redis+sentinel URL: {url!r}")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", item)
        if m is None:
            raise ValueError(f"sentinel URL {url!r}: bad host {item!r}")
        host = m.group(1) or m.group(3)
        port = m.group(2) or m.group(4)
        sentinels.append((host, int(port) if port else 26379))
    segments = [s for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError(f"sentinel URL {url!r}: expected /service_name[/db] after the hosts")
    try:
        db = int(segments[1]) if len(segments) == 2 else 0
    except ValueError:
        raise ValueError(f"sentinel URL {url!r}: db {segments[1]!r} is not a number") from None
    return SentinelTarget(tuple(sentinels), unquote(segments[0]), db, username, password)

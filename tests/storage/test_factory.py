"""Storage URL parsing (factory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwake.storage.factory import SentinelTarget, open_stores, parse_sentinel_url
from sipwake.storage.memory import MemoryStore
from sipwake.storage.redis import RedisStore
from sipwake.storage.sqlite import SQLiteStore


@pytest.mark.parametrize(
    "url", ["postgres://db/x", "sqlite", "/var/lib/x.db", "", "mem://", "redis+cluster://h/0"]
)
async def test_unknown_scheme_is_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="unknown scheme"):
        await open_stores(url, node_id="n")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:",
        "sqlite:///x.db?synchronus=full",
        "redis+sentinel://h:1/svc/0?bogus=1",
    ],
)
async def test_bad_options_are_value_errors(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await open_stores(url.replace("/x.db", f"{tmp_path}/x.db"), node_id="n")


async def test_memory_url() -> None:
    stores = await open_stores("memory://", node_id="n")
    assert isinstance(stores.bindings, MemoryStore)
    assert stores.users is stores.bindings
    await stores.close()


async def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url, created in [
        ("sqlite://data/rel.db", tmp_path / "data" / "rel.db"),
        ("sqlite:data/rel2.db?synchronous=full", tmp_path / "data" / "rel2.db"),  # config.py
        (f"sqlite://{tmp_path}/abs/a.db", tmp_path / "abs" / "a.db"),
        (f"sqlite:{tmp_path}/abs/b.db", tmp_path / "abs" / "b.db"),
    ]:
        stores = await open_stores(url, node_id="n")
        assert isinstance(stores.bindings, SQLiteStore)
        await stores.close()
        assert created.is_file(), url


async def test_redis_url_options_reach_the_client() -> None:
    # No I/O happens until the first command, so no server is needed here.
    stores = await open_stores("redis://127.0.0.1:1/3?prefix=p:&timeout=0.25", node_id="a b")
    store = stores.bindings
    assert isinstance(store, RedisStore)
    kwargs = store._r.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["socket_timeout"], kwargs["client_name"]) == (
        3,
        0.25,
        "sipwake-a_b",
    )
    assert store._key("sip:a@b") == "p:aor:sip:a@b"
    await stores.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://h1:26380,h2/mymaster/2",
            SentinelTarget((("h1", 26380), ("h2", 26379)), "mymaster", 2, None, None),
        ),
        (
            "redis+sentinel://:s%40cret@[::1]:5000,10.0.0.2:26379/svc",
            SentinelTarget((("::1", 5000), ("10.0.0.2", 26379)), "svc", 0, None, "s@cret"),
        ),
        (
            "redis+sentinel://user:pw@h/svc/0",
            SentinelTarget((("h", 26379),), "svc", 0, "user", "pw"),
        ),
    ],
)
def test_parse_sentinel_url(url: str, expected: SentinelTarget) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",
        "redis+sentinel://h1/svc/x",
        "redis+sentinel://h1/svc/0/extra",
        "redis+sentinel://h1:port/svc",
        "redis://h1/svc",
    ],
)
def test_parse_sentinel_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)

"""The storage contract, run against every backend (conftest ``stores`` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from sipwake.policy.bindings import Binding, evolve
from sipwake.storage.base import Stores, User

from .util import NOW, append, binding, replace_all

AOR = "sip:alice@example.com"


async def test_lookup_of_unknown_aor_is_empty(stores: Stores) -> None:
    assert await stores.bindings.lookup("sip:nobody@example.com", NOW) == []
    assert await stores.bindings.count() == 0


async def test_update_stores_bindings_field_for_field(stores: Stores) -> None:
    b0, b1 = binding(n=0), binding(n=1, push=None, flow=None, path=(), extra=())
    assert await stores.bindings.update(AOR, append(b0), NOW) == 0
    assert await stores.bindings.update(AOR, append(b1), NOW) == 1
    assert await stores.bindings.lookup(AOR, NOW) == [b0, b1]
    assert await stores.bindings.lookup("sip:bob@example.com", NOW) == []


async def test_update_sees_only_live_bindings_and_drops_expired_results(stores: Stores) -> None:
    short, long = binding(n=0, expires_at=NOW + 10), binding(n=1, expires_at=NOW + 100)
    await stores.bindings.update(AOR, replace_all([short, long]), NOW)
    seen: list[list[Binding]] = []

    def fn(current: list[Binding]) -> tuple[list[Binding], None]:
        seen.append(current)
        # Returning an already expired binding must not store it.
        return [*current, binding(n=2, expires_at=NOW + 20)], None

    await stores.bindings.update(AOR, fn, NOW + 50)
    assert seen[-1] == [long]
    assert await stores.bindings.lookup(AOR, NOW) == [long]


async def test_empty_list_removes_the_aor(stores: Stores) -> None:
    await stores.bindings.update(AOR, append(binding()), NOW)
    assert await stores.bindings.count() == 1
    await stores.bindings.update(AOR, replace_all([]), NOW)
    assert await stores.bindings.lookup(AOR, NOW) == []
    assert await stores.bindings.count() == 0
    assert await stores.bindings.aors() == []


async def test_failing_callback_writes_nothing(stores: Stores) -> None:
    b = binding()
    await stores.bindings.update(AOR, append(b), NOW)

    def boom(current: list[Binding]) -> tuple[list[Binding], None]:
        raise RuntimeError("registrar bug")

    with pytest.raises(RuntimeError):
        await stores.bindings.update(AOR, boom, NOW)
    assert await stores.bindings.lookup(AOR, NOW) == [b]


async def test_decided_hears_the_result_once_before_update_returns(stores: Stores) -> None:
    heard: list[int] = []
    assert await stores.bindings.update(AOR, append(binding()), NOW, heard.append) == 0
    assert heard == [0]

    def boom(current: list[Binding]) -> tuple[list[Binding], None]:
        raise RuntimeError("registrar bug")

    with pytest.raises(RuntimeError):
        await stores.bindings.update(AOR, boom, NOW, heard.append)
    assert heard == [0]


async def test_binding_of_another_aor_is_rejected(stores: Stores) -> None:
    with pytest.raises(ValueError):
        await stores.bindings.update(AOR, append(binding("sip:bob@example.com")), NOW)
    assert await stores.bindings.lookup(AOR, NOW) == []


async def test_returned_list_is_a_copy(stores: Stores) -> None:
    b = binding()
    await stores.bindings.update(AOR, append(b), NOW)
    got = await stores.bindings.lookup(AOR, NOW)
    got.clear()
    assert await stores.bindings.lookup(AOR, NOW) == [b]


async def test_concurrent_updates_of_one_aor_all_land(stores: Stores) -> None:
    """20 tasks each append one binding at once: none may be lost. On Redis, concurrent
    WATCH transactions conflict, so the callback runs more than 20 times (retries)."""
    calls = 0

    def adder(n: int) -> Callable[[list[Binding]], tuple[list[Binding], None]]:
        def fn(current: list[Binding]) -> tuple[list[Binding], None]:
            nonlocal calls
            calls += 1
            return [*current, binding(n=n)], None

        return fn

    await asyncio.gather(*(stores.bindings.update(AOR, adder(n), NOW) for n in range(20)))
    got = await stores.bindings.lookup(AOR, NOW)
    assert sorted(b.cseq for b in got) == [100 + n for n in range(20)]
    if type(stores.bindings).__name__ == "RedisStore":
        assert calls > 20, "the concurrent test did not exercise the WATCH retry path"


async def test_expired_bindings_hidden_then_purged(stores: Stores) -> None:
    s = stores.bindings
    await s.update(AOR, replace_all([binding(n=0, expires_at=NOW + 10)]), NOW)
    bob = "sip:bob@example.com"
    short, long = binding(bob, 1, expires_at=NOW + 10), binding(bob, 2, expires_at=NOW + 100)
    await s.update(bob, replace_all([short, long]), NOW)

    assert await s.lookup(AOR, NOW + 10) == []  # expires_at == now: expired
    assert await s.lookup(bob, NOW + 10) == [long]
    assert await s.count() == 2  # stored until purged
    assert await s.purge_expired(NOW + 5) == 0
    assert await s.purge_expired(NOW + 10) == 2
    assert await s.count() == 1
    assert await s.aors() == [bob]
    assert await s.lookup(bob, NOW) == [long]  # the partly expired AoR keeps the rest
    assert await s.purge_expired(NOW + 10) == 0


async def test_remove_push_target_keeps_binding(stores: Stores) -> None:
    """A rejected token clears the push target only: the binding may still have a live
    flow, and the device re-registers with a new token."""
    s = stores.bindings
    b0, b1 = binding(n=0), binding(n=1)
    await s.update(AOR, replace_all([b0, b1]), NOW)

    assert await s.remove_push_target(AOR, b1.device_key) is True
    assert await s.lookup(AOR, NOW) == [b0, evolve(b1, push=None)]
    assert await s.remove_push_target(AOR, b1.device_key) is False
    assert await s.remove_push_target(AOR, "instance:urn:uuid:other") is False
    assert await s.remove_push_target("sip:nobody@example.com", b0.device_key) is False
    # Keyed by token when there is no +sip.instance.
    tok = binding("sip:carol@example.com", 3, instance="")
    await s.update(tok.aor, append(tok), NOW)
    assert tok.device_key.startswith("push:apns:")
    assert await s.remove_push_target(tok.aor, tok.device_key) is True
    assert (await s.lookup(tok.aor, NOW))[0].push is None


async def test_count_and_sorted_prefix_listing(stores: Stores) -> None:
    s = stores.bindings
    names = ["sip:b@x.com", "sip:a@x.com", "sip:zoë@x.com", "sip:zz@y.com", "sips:a@x.com"]
    for n, aor in enumerate(names):
        await s.update(aor, append(binding(aor, n)), NOW)
    assert await s.count() == 5
    assert await s.aors() == sorted(names)
    assert await s.aors("sip:") == ["sip:a@x.com", "sip:b@x.com", "sip:zoë@x.com", "sip:zz@y.com"]
    assert await s.aors("sip:z") == ["sip:zoë@x.com", "sip:zz@y.com"]
    assert await s.aors("sip:zo") == ["sip:zoë@x.com"]
    assert await s.aors("sip:", limit=2) == ["sip:a@x.com", "sip:b@x.com"]
    assert await s.aors("tel:") == []


async def test_users_crud(stores: Stores) -> None:
    u = stores.users
    alice = User("alice", "example.com", "a" * 32, "b" * 64)
    # Realm and username with ':' and glob characters must not confuse key patterns.
    odd = User("b*b:1", "ex[a]mple:com", "c" * 32, "", disabled=True)
    other = User("alice", "other.org", "d" * 32, "e" * 64)
    assert await u.get_user("alice", "example.com") is None
    for user in (alice, odd, other):
        await u.put_user(user)
    assert await u.get_user("alice", "example.com") == alice
    assert await u.get_user("b*b:1", "ex[a]mple:com") == odd
    assert await u.get_user("alice", "nowhere") is None
    assert await u.list_users() == [odd, alice, other]  # by (realm, username)
    assert await u.list_users("example.com") == [alice]
    assert await u.list_users("ex[a]mple:com") == [odd]
    assert await u.list_users("ex") == []

    changed = dataclasses.replace(alice, ha1_md5="f" * 32, disabled=True)
    await u.put_user(changed)
    assert await u.get_user("alice", "example.com") == changed

    assert await u.remove_user("alice", "example.com") is True
    assert await u.remove_user("alice", "example.com") is False
    assert await u.get_user("alice", "example.com") is None
    assert await u.list_users() == [odd, other]

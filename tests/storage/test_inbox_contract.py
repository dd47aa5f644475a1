"""The message-store contract (storage/inbox.py), run against memory, SQLite and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from sipwake.policy.inbox import StoredMessage
from sipwake.storage.base import Stores
from sipwake.storage.factory import open_stores

from .util import NOW

AOR = "sip:bob@example.com"
PHONE, TABLET = "instance:urn:uuid:phone", "instance:urn:uuid:tablet"


def msg(n: int, *devices: str, ttl: float = 3600, call_id: str = "") -> StoredMessage:
    return StoredMessage(
        id=f"m{n}",
        call_id=call_id or f"c{n}@alice",
        cseq=n,
        sender="sip:alice@example.com",
        content_type="text/plain",
        stored_at=NOW + n,
        expires_at=NOW + n + ttl,
        devices=devices or (PHONE,),
        data=b"MESSAGE sip:bob@example.com SIP/2.0\r\n\r\nhello %d" % n,
    )


async def test_empty(stores: Stores) -> None:
    m = stores.messages
    assert await m.pending(AOR, PHONE, NOW) == []
    assert await m.listing(AOR, NOW) == []
    assert await m.users(NOW) == {}
    assert (await m.settle(AOR, "m1", PHONE, NOW)).settled is False
    assert await m.purge_expired(NOW) == 0


async def test_stored_in_order_field_for_field(stores: Stores) -> None:
    m = stores.messages
    for n in (1, 2, 3):
        added = await m.add(AOR, msg(n), NOW, 100)
        assert not added.duplicate and added.new_devices == (PHONE,)
    assert await m.pending(AOR, PHONE, NOW) == [msg(1), msg(2), msg(3)]
    assert await m.pending(AOR, TABLET, NOW) == []
    assert await m.pending("sip:carol@example.com", PHONE, NOW) == []
    assert await m.users(NOW) == {AOR: 3}


async def test_dedup_by_call_id_and_cseq_merges_devices(stores: Stores) -> None:
    m = stores.messages
    await m.add(AOR, msg(1, PHONE), NOW, 100)
    again = dataclasses.replace(msg(1, PHONE, TABLET), id="other")
    added = await m.add(AOR, again, NOW, 100)
    assert added.duplicate and added.new_devices == (TABLET,)
    assert added.message.id == "m1"
    assert [x.id for x in await m.listing(AOR, NOW)] == ["m1"]
    assert [x.id for x in await m.pending(AOR, TABLET, NOW)] == ["m1"]
    # Same Call-ID, next CSeq: a different message.
    await m.add(AOR, dataclasses.replace(msg(2), call_id="c1@alice"), NOW, 100)
    assert len(await m.listing(AOR, NOW)) == 2


async def test_each_device_keeps_its_own_inbox(stores: Stores) -> None:
    m = stores.messages
    await m.add(AOR, msg(1, PHONE, TABLET), NOW, 100)
    await m.add(AOR, msg(2, TABLET), NOW, 100)
    assert (await m.settle(AOR, "m1", PHONE, NOW)).settled is True
    assert (await m.settle(AOR, "m1", PHONE, NOW)).settled is False
    assert await m.pending(AOR, PHONE, NOW) == []
    assert [x.id for x in await m.pending(AOR, TABLET, NOW)] == ["m1", "m2"]
    await m.settle(AOR, "m1", TABLET, NOW)
    await m.settle(AOR, "m2", TABLET, NOW)
    assert await m.listing(AOR, NOW) == []
    assert await m.users(NOW) == {}


async def test_expired_hidden_then_counted_once(stores: Stores) -> None:
    m = stores.messages
    await m.add(AOR, msg(1, ttl=10), NOW, 100)  # expires at NOW + 11
    await m.add(AOR, msg(2, ttl=100), NOW, 100)
    assert [x.id for x in await m.pending(AOR, PHONE, NOW + 11)] == ["m2"]
    assert [x.id for x in await m.listing(AOR, NOW + 11)] == ["m2"]
    assert await m.purge_expired(NOW + 5) == 0
    assert await m.purge_expired(NOW + 11) == 1
    assert await m.purge_expired(NOW + 11) == 0
    # A change of the AoR removes (and reports) what expired as well.
    added = await m.add(AOR, msg(3), NOW + 200, 100)
    assert [x.id for x in added.expired] == ["m2"]
    assert [x.id for x in await m.listing(AOR, NOW + 200)] == ["m3"]


async def test_quota_drops_oldest(stores: Stores) -> None:
    m = stores.messages
    for n in (1, 2, 3):
        await m.add(AOR, msg(n), NOW, 3)
    added = await m.add(AOR, msg(4), NOW, 3)
    assert [x.id for x in added.dropped] == ["m1"]
    assert [x.id for x in await m.pending(AOR, PHONE, NOW)] == ["m2", "m3", "m4"]
    assert await m.users(NOW) == {AOR: 3}


async def test_concurrent_adds_all_land(stores: Stores) -> None:
    m = stores.messages
    await asyncio.gather(*(m.add(AOR, msg(n), NOW, 100) for n in range(1, 21)))
    got = await m.listing(AOR, NOW)
    assert sorted(x.cseq for x in got) == list(range(1, 21))


async def test_users_listing_sorted_and_limited(stores: Stores) -> None:
    m = stores.messages
    for aor in ("sip:c@x.com", "sip:a@x.com", "sip:b@x.com"):
        await m.add(aor, msg(1), NOW, 100)
    assert list(await m.users(NOW)) == ["sip:a@x.com", "sip:b@x.com", "sip:c@x.com"]
    assert list(await m.users(NOW, limit=2)) == ["sip:a@x.com", "sip:b@x.com"]


async def test_sqlite_messages_survive_reopen(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/db.sqlite"
    first = await open_stores(url, node_id="a")
    await first.messages.add(AOR, msg(1, PHONE, TABLET), NOW, 100)
    await first.messages.settle(AOR, "m1", PHONE, NOW)
    await first.close()
    second = await open_stores(url, node_id="a")
    try:
        assert await second.messages.pending(AOR, TABLET, NOW) == [msg(1, TABLET)]
        assert await second.messages.pending(AOR, PHONE, NOW) == []
    finally:
        await second.close()

"""The push budget on a fake clock: bursts, refill, per device and per source."""

from __future__ import annotations

import pytest

from sipwake.policy.pushbudget import PushBudget, Refusal, TokenBuckets

T0 = 1_000.0


def budget(**kw: object) -> PushBudget:
    args: dict[str, object] = {
        "per_device": 6.0,
        "device_burst": 2,
        "per_source": 60.0,
        "source_burst": 3,
    }
    args.update(kw)
    return PushBudget(**args)  # type: ignore[arg-type]


def test_bucket_burst_then_rate() -> None:
    b = TokenBuckets(per_minute=6, burst=2)
    for _ in range(2):
        assert b.allows("d", T0)
        b.spend("d", T0)
    assert not b.allows("d", T0)
    assert not b.allows("d", T0 + 9.9)  # 6 a minute: one token every 10 s
    assert b.allows("d", T0 + 10.0)
    b.spend("d", T0 + 10.0)
    assert not b.allows("d", T0 + 10.0)
    assert b.available("d", T0 + 10_000) == 2.0  # never more than the burst
    assert b.allows("other", T0)


def test_bucket_zero_rate_is_unlimited_and_bounded_memory() -> None:
    free = TokenBuckets(per_minute=0, burst=1)
    for _ in range(100):
        assert free.allows("d", T0)
        free.spend("d", T0)
    assert len(free) == 0
    small = TokenBuckets(per_minute=1, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        small.spend(key, T0)
    assert len(small) == 2
    assert small.allows("a", T0)  # forgotten: forgiven, never stricter


@pytest.mark.parametrize("kw", [{"per_minute": -1, "burst": 1}, {"per_minute": 1, "burst": 0}])
def test_bucket_rejects_bad_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(**kw)  # type: ignore[arg-type]


def test_device_budget_whoever_calls() -> None:
    pb = budget()
    assert pb.admit(["dev"], "ip:192.0.2.1", T0, anonymous=True).push == ("dev",)
    assert pb.admit(["dev"], "ip:192.0.2.2", T0, anonymous=True).push == ("dev",)
    third = pb.admit(["dev", "other"], "ip:192.0.2.3", T0, anonymous=True)
    assert third.push == ("other",)
    assert third.refused == (("dev", Refusal.DEVICE),)
    assert pb.admit(["dev"], "ip:192.0.2.3", T0 + 10, anonymous=True).push == ("dev",)


def test_source_budget_counts_calls_and_refuses_everything_past_it() -> None:
    pb = budget(per_device=0)
    for i in range(3):
        # one call pushing two devices spends one source token
        assert len(pb.admit([f"a{i}", f"b{i}"], "ip:198.51.100.7", T0, anonymous=True).push) == 2
    over = pb.admit(["x", "y"], "ip:198.51.100.7", T0, anonymous=True)
    assert over.push == ()
    assert over.refused == (("x", Refusal.SOURCE), ("y", Refusal.SOURCE))
    # another caller, and the same one a second later (60 a minute), go through
    assert pb.admit(["x"], "ip:198.51.100.8", T0, anonymous=True).push == ("x",)
    assert pb.admit(["y"], "ip:198.51.100.7", T0 + 1, anonymous=True).push == ("y",)


def test_refused_calls_spend_nothing() -> None:
    pb = budget(per_device=6, device_burst=1, source_burst=1)
    assert pb.admit(["d"], "s", T0, anonymous=False).push == ("d",)
    # device over budget: the source keeps its (empty) bucket unchanged...
    assert pb.admit(["d"], "t", T0, anonymous=False).push == ()
    assert pb.admit(["e"], "t", T0, anonymous=False).push == ("e",)  # t's token unspent


def test_trusted_source_has_no_source_budget() -> None:
    pb = budget(per_device=0, source_burst=1)
    for i in range(20):
        assert pb.admit([f"d{i}"], None, T0, anonymous=False).push == (f"d{i}",)


def test_require_auth_refuses_anonymous_callers_only() -> None:
    pb = budget(require_auth=True)
    anon = pb.admit(["d"], "ip:203.0.113.5", T0, anonymous=True)
    assert anon.push == () and anon.refused == (("d", Refusal.ANONYMOUS),)
    assert pb.admit(["d"], "user:alice", T0, anonymous=False).push == ("d",)

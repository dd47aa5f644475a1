"""When binding-refresh pushes go out, and to whom (policy/refresh.py, RFC 8599 §5.5)."""

from __future__ import annotations

from sipwake.policy.bindings import PushTarget
from sipwake.policy.refresh import refresh_times, refreshable

NOW = 1_700_000_000.0


def test_first_push_ahead_of_expiry_then_doubling_retries_before_it() -> None:
    times = refresh_times(NOW + 3600, NOW, before=120, retries=3, backoff=15)
    assert [t - NOW for t in times] == [3480, 3495, 3525, 3585]
    # Retries that would land at or after the expiry are not planned.
    times = refresh_times(NOW + 3600, NOW, before=50, retries=5, backoff=15)
    assert [t - NOW for t in times] == [3550, 3565, 3595]


def test_off_or_too_short_lived_means_no_push() -> None:
    assert refresh_times(NOW + 3600, NOW, before=0, retries=3, backoff=15) == []
    # Granted less than the lead time: the app just registered, pushing now is pointless.
    assert refresh_times(NOW + 100, NOW, before=120, retries=3, backoff=15) == []
    assert [t - NOW for t in refresh_times(NOW + 3600, NOW, before=120, retries=0, backoff=15)] == [
        3480
    ]


def test_only_targets_that_can_be_woken_without_ringing() -> None:
    assert refreshable(PushTarget("apns", "a" * 64, alert_prid="b" * 64))
    assert not refreshable(PushTarget("apns", "a" * 64))  # VoIP token only
    assert refreshable(PushTarget("apns.dev", "a" * 64, alert_prid="b" * 64))
    assert refreshable(PushTarget("fcm", "tok"))
    assert refreshable(PushTarget("acme", "tok"))  # webhook: the operator's service decides
    assert not refreshable(PushTarget("webpush", "https://push.example/x"))

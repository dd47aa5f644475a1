"""When to send binding-refresh pushes (RFC 8599 §5.5) and to whom. Pure.

A sleeping app cannot refresh its registration by itself, so before a push binding expires
we push it to wake it and make it REGISTER again: the first push ``before`` seconds ahead
of the expiry (RFC 8599 §5.5 recommends at least 120 s, so the REGISTER has time to
arrive), then, if no REGISTER came, retries with a doubling wait, all before the expiry.
OpenSIPS users report the failure this avoids (opensips#2873): one lost refresh push and
the phone silently drops out of the registrar.

A refresh push must never ring: on iOS a PushKit VoIP push must report a CallKit call, so
APNs refreshes are background pushes to the app's non-VoIP (``remote``) token, and a
binding without one cannot be refreshed by push. Web Push pushes must show a notification
(``userVisibleOnly``), which for a refresh would be a fake "incoming call", so Web Push
bindings are not refreshed by push either (docs/push-payload.md "Binding refresh")."""

from __future__ import annotations

from sipwake.policy.bindings import PushTarget
from sipwake.policy.pushparams import provider_family


def refresh_times(
    expires_at: float, now: float, *, before: float, retries: int, backoff: float
) -> list[float]:
    """Wall-clock times to push at for a binding that expires at ``expires_at``: the first
    ``before`` seconds ahead, then up to ``retries`` more ``backoff``, 2x``backoff``...
    later, every one after ``now`` and before the expiry. Empty when ``before`` is 0 or
    the binding is too short-lived to be refreshed by push (its first push would be due
    already: the app just registered)."""
    if before <= 0:
        return []
    first = expires_at - before
    if first <= now:
        return []
    times = [first]
    wait = backoff
    for _ in range(retries):
        at = times[-1] + wait
        if at >= expires_at:
            break
        times.append(at)
        wait *= 2
    return times


def refreshable(target: PushTarget) -> bool:
    """Can ``target`` get a push that wakes the app without ringing? (module doc)"""
    family = provider_family(target.provider)
    if family == "apns":
        return bool(target.alert_prid)
    return family != "webpush"

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from sipwake.api import Metrics


def value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    m.sample()  # the per-message counts reach the registry at a sample (a scrape)
    return m.registry.get_sample_value(name, labels or {})


def test_per_message_counts_reach_the_registry_at_each_sample_once() -> None:
    m = Metrics()
    for _ in range(3):
        m.message_received()
    m.response_sent(503)
    m.refused("overload", 2)
    m.registration("ok")
    m.call("answered")
    series = [
        ("sipwake_sip_messages_received_total", {}, 3),
        ("sipwake_sip_responses_sent_total", {"code": "503"}, 1),
        ("sipwake_refused_total", {"reason": "overload"}, 2),
        ("sipwake_registrations_total", {"result": "ok"}, 1),
        ("sipwake_calls_total", {"result": "answered"}, 1),
    ]
    for name, labels, _ in series:  # counted, not yet sampled
        assert m.registry.get_sample_value(name, labels) in (0, None)
    text = m.render().decode()  # a scrape samples first
    assert 'sipwake_refused_total{reason="overload"} 2.0' in text
    for name, labels, count in series:
        assert m.registry.get_sample_value(name, labels) == count
    m.message_received()
    m.sample()
    m.sample()  # a second sample with nothing new adds nothing
    assert m.registry.get_sample_value("sipwake_sip_messages_received_total") == 4
    assert m.registry.get_sample_value("sipwake_refused_total", {"reason": "overload"}) == 2


def test_counts_a_sampler_adds_are_in_the_same_scrape() -> None:
    m = Metrics()
    refusals = {"connection_limit": 0}
    m.watch_transport_refusals(lambda: refusals)
    refusals["connection_limit"] = 20
    text = m.render().decode()
    assert 'sipwake_refused_total{reason="connection_limit"} 20.0' in text


def test_injected_registry_and_independent_instances() -> None:
    registry = CollectorRegistry()
    a, b = Metrics(registry), Metrics()
    assert a.registry is registry
    a.message_received()
    a.message_received()
    assert value(a, "sipwake_sip_messages_received_total") == 2
    assert value(b, "sipwake_sip_messages_received_total") == 0
    assert REGISTRY.get_sample_value("sipwake_sip_messages_received_total") is None  # not global


def test_plain_methods_hit_the_right_children() -> None:
    m = Metrics()
    m.parse_error()
    m.dropped()
    for status in (100, 180, 200, 302, 486, 503, 603):
        m.response_sent(status)
    m.registration("ok")
    m.registration("brand-new-result")  # unknown values still count, bound on first use
    m.registration("brand-new-result")
    m.call("answered")
    m.held_calls.inc()
    m.held_calls.dec()
    m.decline("busy")
    m.auth_failure()
    assert value(m, "sipwake_sip_parse_errors_total") == 1
    assert value(m, "sipwake_sip_dropped_total") == 1
    assert value(m, "sipwake_sip_responses_sent_total", {"code": "100"}) == 1
    assert value(m, "sipwake_sip_responses_sent_total", {"code": "180"}) == 1
    assert value(m, "sipwake_sip_responses_sent_total", {"code": "603"}) == 1
    assert value(m, "sipwake_sip_responses_sent_total", {"code": "302"}) == 1  # bound late
    assert value(m, "sipwake_registrations_total", {"result": "ok"}) == 1
    assert value(m, "sipwake_registrations_total", {"result": "brand-new-result"}) == 2
    assert value(m, "sipwake_calls_total", {"result": "answered"}) == 1
    assert value(m, "sipwake_held_calls") == 0
    assert value(m, "sipwake_declines_total", {"reason": "busy"}) == 1
    assert value(m, "sipwake_auth_failures_total") == 1


def test_push_outcomes_are_a_closed_set() -> None:
    m = Metrics()
    m.push("apns", "transient", latency=0.2)
    m.push("custom-gateway", "delivered")  # a provider we did not foresee is fine
    m.push("apns", "token_rejected", 0.05, reason="Unregistered")
    m.push("fcm", "permanent", 0.05, reason="OAuth: token endpoint answered 400: ...")
    v = value(m, "sipwake_pushes_total", {"provider": "apns", "outcome": "transient", "reason": ""})
    assert v == 1
    labels = {"provider": "custom-gateway", "outcome": "delivered", "reason": ""}
    assert value(m, "sipwake_pushes_total", labels) == 1
    labels = {"provider": "apns", "outcome": "token_rejected", "reason": "Unregistered"}
    assert value(m, "sipwake_pushes_total", labels) == 1
    # Free text never becomes a label value.
    labels = {"provider": "fcm", "outcome": "permanent", "reason": "other"}
    assert value(m, "sipwake_pushes_total", labels) == 1
    assert value(m, "sipwake_push_latency_seconds_count", {"provider": "apns"}) == 2
    assert value(m, "sipwake_push_latency_seconds_bucket", {"provider": "apns", "le": "0.25"}) == 2
    assert value(m, "sipwake_push_latency_seconds_bucket", {"provider": "apns", "le": "0.1"}) == 1
    with pytest.raises(ValueError):
        m.push("apns", "lost")


def test_render_is_text_exposition() -> None:
    m = Metrics()
    m.push("fcm", "permanent")
    text = m.render().decode()
    assert "# TYPE sipwake_pushes_total counter" in text
    assert 'sipwake_pushes_total{outcome="permanent",provider="fcm",reason=""} 1.0' in text
    assert "# TYPE sipwake_push_latency_seconds histogram" in text
    assert 'sipwake_build_info{python="' in text


def test_every_series_is_prefixed() -> None:
    text = Metrics().render().decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(n.startswith("sipwake_") for n in names), names


def test_sampled_values_wake_and_in_flight() -> None:
    m = Metrics()
    m.add_sampler(lambda metrics: metrics.set_connections({"tcp": 3, "tls": 1}))
    m.set_bindings({"apns": 2, "none": 1})
    m.set_credential_expiry("tls.cert_file", 1_900_000_000)
    m.push_started("apns")
    m.push_started("apns")
    m.push_finished("apns")
    m.wake(push_to_register=0.8, invite_to_delivery=None)
    m.wake(push_to_register=None, invite_to_delivery=1.2)
    m.render()  # a single process samples at each scrape
    assert value(m, "sipwake_open_connections", {"transport": "tcp"}) == 3
    assert value(m, "sipwake_open_connections", {"transport": "wss"}) == 0
    assert value(m, "sipwake_bindings", {"provider": "apns"}) == 2
    assert value(m, "sipwake_bindings", {"provider": "fcm"}) == 0
    assert value(m, "sipwake_pushes_in_flight", {"provider": "apns"}) == 1
    labels = {"credential": "tls.cert_file"}
    assert value(m, "sipwake_credential_expiry_timestamp_seconds", labels) == 1_900_000_000
    assert value(m, "sipwake_wake_register_seconds_count") == 1
    assert value(m, "sipwake_wake_delivery_seconds_bucket", {"le": "2.0"}) == 1
    assert value(m, "sipwake_wake_delivery_seconds_bucket", {"le": "1.0"}) == 0


async def test_async_samplers_run_at_most_every_max_age() -> None:
    m = Metrics()
    runs: list[int] = []

    async def count(metrics: Metrics) -> None:
        runs.append(1)
        metrics.set_bindings({"fcm": len(runs)})

    m.add_async_sampler(count)
    await m.refresh()
    await m.refresh()
    assert len(runs) == 1
    await m.refresh(max_age=0)
    assert value(m, "sipwake_bindings", {"provider": "fcm"}) == 2


def test_instant_message_results() -> None:
    m = Metrics()
    m.instant_message("stored")
    m.instant_message("dropped", 3)
    m.instant_message("expired", 0)  # nothing expired: no sample change
    assert value(m, "sipwake_instant_messages_total", {"result": "stored"}) == 1
    assert value(m, "sipwake_instant_messages_total", {"result": "dropped"}) == 3
    assert value(m, "sipwake_instant_messages_total", {"result": "expired"}) == 0
    assert value(m, "sipwake_instant_messages_total", {"result": "delivered"}) == 0


def test_keepalives_are_read_from_the_transport_counters_at_scrape_time() -> None:
    m = Metrics()
    counts = {"stun": 0, "crlf": 0}
    m.watch_keepalives(lambda: dict(counts))
    m.sample()
    assert value(m, "sipwake_sip_keepalives_total", {"kind": "stun"}) == 0
    counts["stun"] = 3
    counts["crlf"] = 2
    assert b'sipwake_sip_keepalives_total{kind="crlf"} 2.0' in m.render()
    assert value(m, "sipwake_sip_keepalives_total", {"kind": "stun"}) == 3
    counts["stun"] = 4
    m.sample()
    assert value(m, "sipwake_sip_keepalives_total", {"kind": "stun"}) == 4

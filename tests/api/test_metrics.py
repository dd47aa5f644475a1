from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from sipwake.api import Metrics


def value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return m.registry.get_sample_value(name, labels or {})


def test_injected_registry_and_independent_instances() -> None:
    registry = CollectorRegistry()
    a, b = Metrics(registry), Metrics()
    assert a.registry is registry
    a.message_received()
    a.message_received()
    assert value(a, "sip_messages_received_total") == 2
    assert value(b, "sip_messages_received_total") == 0
    assert REGISTRY.get_sample_value("sip_messages_received_total") is None  # not global


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
    assert value(m, "sip_parse_errors_total") == 1
    assert value(m, "sip_dropped_total") == 1
    assert value(m, "sip_responses_sent_total", {"class": "1xx"}) == 2
    assert value(m, "sip_responses_sent_total", {"class": "6xx"}) == 1
    assert value(m, "registrations_total", {"result": "ok"}) == 1
    assert value(m, "registrations_total", {"result": "brand-new-result"}) == 2
    assert value(m, "calls_total", {"result": "answered"}) == 1
    assert value(m, "held_calls") == 0
    assert value(m, "declines_total", {"reason": "busy"}) == 1
    assert value(m, "auth_failures_total") == 1


def test_push_outcomes_are_a_closed_set() -> None:
    m = Metrics()
    m.push("apns", "transient", latency=0.2)
    m.push("custom-gateway", "delivered")  # a provider we did not foresee is fine
    assert value(m, "pushes_total", {"provider": "apns", "outcome": "transient"}) == 1
    assert value(m, "pushes_total", {"provider": "custom-gateway", "outcome": "delivered"}) == 1
    assert value(m, "push_latency_seconds_count") == 1
    assert value(m, "push_latency_seconds_bucket", {"le": "0.25"}) == 1
    assert value(m, "push_latency_seconds_bucket", {"le": "0.1"}) == 0
    with pytest.raises(ValueError):
        m.push("apns", "lost")


def test_render_is_text_exposition() -> None:
    m = Metrics()
    m.push("fcm", "permanent")
    text = m.render().decode()
    assert "# TYPE pushes_total counter" in text
    assert 'pushes_total{outcome="permanent",provider="fcm"} 1.0' in text
    assert "# TYPE push_latency_seconds histogram" in text


def test_instant_message_results() -> None:
    m = Metrics()
    m.instant_message("stored")
    m.instant_message("dropped", 3)
    m.instant_message("expired", 0)  # nothing expired: no sample change
    assert value(m, "instant_messages_total", {"result": "stored"}) == 1
    assert value(m, "instant_messages_total", {"result": "dropped"}) == 3
    assert value(m, "instant_messages_total", {"result": "expired"}) == 0
    assert value(m, "instant_messages_total", {"result": "delivered"}) == 0


def test_keepalives_are_read_from_the_transport_counters_at_scrape_time() -> None:
    m = Metrics()
    counts = {"stun": 0, "crlf": 0}
    m.watch_keepalives(lambda: dict(counts))
    assert value(m, "sip_keepalives_total", {"kind": "stun"}) == 0
    counts["stun"] = 3
    counts["crlf"] = 2
    assert value(m, "sip_keepalives_total", {"kind": "stun"}) == 3
    assert b'sip_keepalives_total{kind="crlf"} 2.0' in m.render()

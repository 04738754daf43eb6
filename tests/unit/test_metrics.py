"""Metric counting from telemetry and the JSON log formatter (streams/metrics.py, jsonlog.py)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from streams.jsonlog import JsonFormatter
from streams.metrics import Metrics

AT = datetime(2026, 11, 2, tzinfo=UTC)


def _value(m: Metrics, series: str, **labels: str) -> float:
    found = m.registry.get_sample_value(series, labels)
    return 0.0 if found is None else found


def test_metrics_observe_telemetry_counts_by_name_and_reason() -> None:
    m = Metrics()
    for name, attrs in [
        ("dispatch.sent", {"adapter_id": "a1"}),
        ("dispatch.deferred", {"reason": "cap"}),
        ("dispatch.deferred", {"reason": "gap"}),
        ("dispatch.deferred", {"reason": "cap"}),
        ("dispatch.adapter_pinned", {}),
        ("dispatch.pool_exhausted", {}),
        ("dispatch.failed", {}),
    ]:
        m.observe_telemetry({"name": name, "tenant_key": "t", "at": AT, "attributes": attrs})
    assert _value(m, "dripdrop_sends_total") == 1
    assert _value(m, "dripdrop_deferrals_total", reason="cap") == 2
    assert _value(m, "dripdrop_deferrals_total", reason="gap") == 1
    assert _value(m, "dripdrop_pins_total") == 1
    assert _value(m, "dripdrop_pool_exhausted_total") == 1
    assert _value(m, "dripdrop_send_outcomes_total", status="failed") == 1
    assert _value(m, "dripdrop_telemetry_events_total", name="dispatch.deferred") == 3


def test_metrics_health_gauge_moves_adapters_between_states() -> None:
    m = Metrics()

    def changed(adapter: str, to: str) -> None:
        m.observe_telemetry(
            {
                "name": "health.state_changed",
                "attributes": {"adapter_id": adapter, "to": to, "reason": "bounce_threshold"},
            }
        )

    changed("a1", "resting")
    changed("a2", "resting")
    changed("a1", "probing")
    assert _value(m, "dripdrop_adapters_in_health_state", state="resting") == 1
    assert _value(m, "dripdrop_adapters_in_health_state", state="probing") == 1
    assert (
        _value(
            m, "dripdrop_health_transitions_total", to_state="resting", reason="bounce_threshold"
        )
        == 2
    )


def test_json_formatter_one_object_per_record_with_extras_and_exception() -> None:
    record = logging.LogRecord("dripdrop.x", logging.WARNING, "f.py", 1, "hi %s", ("there",), None)
    record.partition = 3
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["level"], entry["logger"], entry["msg"], entry["partition"]) == (
        "warning",
        "dripdrop.x",
        "hi there",
        3,
    )
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, "f.py", 1, "bad", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exc"]

"""Prometheus metrics of one worker (SPEC §10), served on ``DRIPDROP_METRICS_PORT``.

Counted from what the pipeline already produces: every telemetry event of a processed
record (``observe``, called from ``Pipeline.publish``), dead letters and per-record processing
time (``instrument`` hooks into the pipeline and its dead letters), and consumer lag
(a timer reading ``app.consumer``: highwater − position per assigned partition). Labels are
bounded: telemetry names, reasons, health states, short topic names; never addresses,
adapter ids or enrollment ids. Nothing is recorded until ``start`` is called.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from streams.settings import Settings

log = logging.getLogger("dripdrop.metrics")

LAG_INTERVAL_SECONDS = 5.0
HEALTH_STATES = ("active", "ramping", "resting", "probing", "unmanaged")


class Metrics:
    """The collectors, in their own registry (tests and several apps never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sends = Counter("dripdrop_sends", "Sends confirmed by a dispatch result.", registry=r)
        self.send_outcomes = Counter(
            "dripdrop_send_outcomes",
            "Dispatch results by status (sent, failed, ambiguous).",
            ["status"],
            registry=r,
        )
        self.deferrals = Counter(
            "dripdrop_deferrals", "Steps deferred, by reason.", ["reason"], registry=r
        )
        self.pins = Counter("dripdrop_pins", "Enrollments pinned to a pool member.", registry=r)
        self.pool_exhausted = Counter(
            "dripdrop_pool_exhausted", "Enrollments rejected: no eligible member.", registry=r
        )
        self.telemetry = Counter(
            "dripdrop_telemetry_events", "Telemetry events emitted, by name.", ["name"], registry=r
        )
        self.health_transitions = Counter(
            "dripdrop_health_transitions",
            "Adapter health transitions, by target state and reason.",
            ["to_state", "reason"],
            registry=r,
        )
        self.health_states = Gauge(
            "dripdrop_adapters_in_health_state",
            "Adapters per health state, from the transitions this worker has seen.",
            ["state"],
            registry=r,
        )
        self.dead_letters = Counter(
            "dripdrop_dead_letters",
            "Records put on the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.processing = Histogram(
            "dripdrop_processing_seconds",
            "Time to process one input record (decide and publish).",
            ["topic"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.lag = Gauge(
            "dripdrop_consumer_lag_records",
            "Records not yet consumed (highwater - position) per topic (changelogs: no app id).",
            ["topic"],
            registry=r,
        )
        self._health: dict[str, str] = {}
        for state in HEALTH_STATES:
            self.health_states.labels(state=state).set(0)

    def observe_telemetry(self, event: dict[str, Any]) -> None:
        """Count one telemetry event (``Outputs.telemetry`` item)."""
        name = str(event.get("name", ""))
        attrs = event.get("attributes") or {}
        self.telemetry.labels(name=name).inc()
        if name == "dispatch.sent":
            self.sends.inc()
            self.send_outcomes.labels(status="sent").inc()
        elif name in ("dispatch.failed", "dispatch.ambiguous"):
            self.send_outcomes.labels(status=name.split(".", 1)[1]).inc()
        elif name == "dispatch.deferred":
            self.deferrals.labels(reason=str(attrs.get("reason") or "unknown")).inc()
        elif name == "dispatch.adapter_pinned":
            self.pins.inc()
        elif name == "dispatch.pool_exhausted":
            self.pool_exhausted.inc()
        elif name == "health.state_changed":
            to_state = str(attrs.get("to") or "unmanaged")
            self.health_transitions.labels(
                to_state=to_state, reason=str(attrs.get("reason") or "unknown")
            ).inc()
            adapter_id = str(attrs.get("adapter_id") or "")
            if adapter_id:
                self._set_health(adapter_id, to_state)

    def _set_health(self, adapter_id: str, state: str) -> None:
        previous = self._health.get(adapter_id)
        if previous == state:
            return
        if previous is not None:
            self.health_states.labels(state=previous).dec()
        self._health[adapter_id] = state
        self.health_states.labels(state=state).inc()

    async def update_lag(
        self, app: faust.App, *, prefix: str, app_id: str, stages: Any = ()
    ) -> None:
        """Sum highwater − position over the partitions this worker is assigned (the Faust
        consumer's, and the stateless stages' own, ``streams/batch_consumer.py``)."""
        consumer = app.consumer
        totals: dict[str, int] = {}
        for tp in consumer.assignment():
            position = await consumer.position(tp)
            highwater = consumer.highwater(tp)
            if position is None or highwater is None:
                continue
            short = tp.topic.removeprefix(prefix).removeprefix(f"{app_id}-")
            totals[short] = totals.get(short, 0) + max(0, highwater - position)
        for stage in stages:
            if (stage_lag := await asyncio.to_thread(stage.lag)) is not None:
                totals[stage.topic] = stage_lag
        for topic, lag in totals.items():
            self.lag.labels(topic=topic).set(lag)


_active: Metrics | None = None


def observe(out: Any) -> None:
    """Count the telemetry of one processed record's outputs; a no-op until ``start``."""
    if _active is None:
        return
    for event in out.telemetry:
        _active.observe_telemetry(event)


def start(settings: Settings, app: faust.App, pipeline: Any) -> Metrics | None:
    """Serve ``/metrics`` on ``settings.metrics_port`` and instrument ``pipeline``.

    Returns ``None`` (and records nothing) when no port is configured.
    """
    global _active
    if settings.metrics_port is None:
        return None
    # No *_created series: they double the scrape for nothing. Untyped in prometheus_client.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics()
    start_http_server(settings.metrics_port, registry=metrics.registry)
    _active = metrics
    instrument(pipeline, metrics)

    @app.timer(LAG_INTERVAL_SECONDS)  # type: ignore[untyped-decorator] # faust is untyped
    async def consumer_lag() -> None:
        try:
            await metrics.update_lag(
                app,
                prefix=settings.topic_prefix,
                app_id=settings.app_id,
                stages=getattr(pipeline, "consumers", ()),
            )
        except Exception as exc:  # noqa: BLE001 - a metric must never stop the worker
            log.debug("consumer lag unavailable: %s", exc)

    return metrics


def instrument(pipeline: Any, metrics: Metrics) -> None:
    """Time each processed record and count dead letters by reason, through the pipeline's
    explicit hooks (``Pipeline.hooks``, ``DeadLetters.hooks``)."""

    def timed(topic: str, seconds: float) -> None:
        metrics.processing.labels(topic=topic).observe(seconds)

    def counted(reason: str) -> None:
        metrics.dead_letters.labels(reason=reason).inc()

    pipeline.hooks.append(timed)
    pipeline.dead_letters.hooks.append(counted)

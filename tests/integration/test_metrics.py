"""The worker's Prometheus endpoint and JSON logs (SPEC §10): a real worker subprocess.

The worker runs with ``DRIPDROP_METRICS_PORT`` and ``DRIPDROP_LOG_FORMAT=json``; after one
enrollment is sent through a real SMTP server, ``/metrics`` shows the send, the pin, the
deferral by reason and the processing-time histogram, with ``dripdrop_*`` names only and
no id or address in any label.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Callable

from streams.api import DripDrop
from streams.mailsink import SmtpSink, free_port
from streams.settings import Settings
from tests.integration.support import WorkerProcess, wait_for


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {series: value}; empty while the server is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            body = response.read().decode()
    except OSError:
        return {}
    series: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def test_worker_metrics_endpoint_counts_sends_pins_deferrals_and_logs_json(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics()
    port = free_port()
    tenant = f"acct-{uuid.uuid4().hex[:8]}"
    with DripDrop(settings) as dd:
        adapter = dd.create_channel_adapter(
            tenant_key=tenant,
            name="mbox",
            provider="smtp",
            from_address="rep@mbox.example",
            health_state="active",
            min_gap_seconds=3600,  # the second step is deferred by the gap
            config=smtp.adapter_config(),
        )
        pool = dd.create_adapter_pool(tenant_key=tenant, name="sales")
        dd.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id)
        sequence = dd.create_sequence(tenant_key=tenant, key="cold")
        version = dd.create_sequence_version(
            sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
        )
        for position in range(2):
            dd.create_step(
                version.id,
                tenant_key=tenant,
                key=f"s{position}",
                position=position,
                subject_template="Hello",
                body_template="Hi",
            )
        worker = worker_factory(
            settings.model_copy(update={"metrics_port": port, "log_format": "json"})
        )
        dd.enroll(
            tenant_key=tenant,
            sequence_id=sequence.id,
            subscriber_id="lead-1",
            recipient="lead@example.org",
        )

    def counted() -> dict[str, float] | None:
        assert worker.alive(), worker.log_tail()
        found = scrape(port)
        done = found.get("dripdrop_sends_total", 0) >= 1 and any(
            k.startswith("dripdrop_deferrals_total") for k in found
        )
        return found if done else None

    metrics = wait_for(counted, timeout=90, what="a send and a deferral in /metrics")
    assert metrics["dripdrop_pins_total"] == 1
    assert metrics['dripdrop_deferrals_total{reason="gap"}'] >= 1
    assert metrics['dripdrop_send_outcomes_total{status="sent"}'] >= 1
    assert metrics['dripdrop_processing_seconds_count{topic="enrollments"}'] >= 1
    assert metrics["dripdrop_pool_exhausted_total"] == 0
    assert 'dripdrop_adapters_in_health_state{state="resting"}' in metrics
    dripdrop = [name for name in metrics if name.startswith("dripdrop_")]
    assert dripdrop and not any("_created" in name for name in dripdrop)
    labels = " ".join(dripdrop)
    assert tenant not in labels and adapter.id not in labels and "@" not in labels
    # The Faust consumer's topics and the sink's own consumer (streams/batch_consumer.py).
    wait_for(
        lambda: (
            {
                'dripdrop_consumer_lag_records{topic="enrollments"}',
                'dripdrop_consumer_lag_records{topic="sink"}',
            }
            <= set(scrape(port))
        ),
        timeout=30,
        what="consumer lag gauges of enrollments and sink",
    )
    assert worker.stop() == 0, worker.log_tail()
    logged = [
        json.loads(line)
        for line in worker.log_path.read_text(errors="replace").splitlines()
        if re.match(r"^\{\"ts\":", line)
    ]
    assert logged, worker.log_tail()
    assert {"ts", "level", "logger", "msg"} <= set(logged[0])
    assert any(entry["level"] == "info" and entry["msg"] for entry in logged)

"""Recipient-domain throttles through a real worker (SPEC §13): API → PostgreSQL → config
topic → worker → SMTP (aiosmtpd).

A tenant-wide limit of 2 sends per UTC hour to gmail.com spreads 6 Gmail prospects over
three simulated hours, 2 in each, while the other domain's prospects go at once; the
deferred ones carry reason ``domain_throttle`` until the exact start of an hour.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import build_outbound, rows, scaled, start_worker, tenant
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for


def test_a_tenant_wide_hourly_throttle_spreads_one_domains_sends_over_the_hours(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    world = build_outbound(client, smtp, tenant_key=key, steps=1)
    client.set_domain_throttle(tenant_key=key, domain="gmail.com", per_hour=2)
    # One simulated hour = 1 s real: the worker starts within the first hour.
    epoch = datetime(2031, 7, 1, 0, 0, 30, tzinfo=UTC)
    run, _ = scaled(settings, day_seconds=24.0, epoch=epoch)
    worker = start_worker(worker_factory, run)
    recipients = [f"g{i}@gmail.com" for i in range(6)] + ["a@example.org", "b@example.org"]
    for r in recipients:
        client.enroll(
            tenant_key=key,
            sequence_id=world.sequence.id,
            subscriber_id=r,
            recipient=r,
            data={"first_name": r.split("@")[0]},
        )

    def all_sent() -> bool:
        assert worker.alive(), worker.log_tail()
        return {m.rcpt_tos[0] for m in smtp.messages if m.rcpt_tos[0] in recipients} == set(
            recipients
        )

    wait_for(all_sent, timeout=90, what="every prospect's first step")
    handed = rows(
        run,
        "SELECT recipient, scheduled_for FROM dripdrop.step_executions WHERE tenant_key = %s",
        key,
    )
    per_hour = Counter(
        at.replace(minute=0, second=0, microsecond=0) for r, at in handed if "@gmail" in r
    )
    assert sorted(per_hour.values()) == [2, 2, 2], per_hour
    others = sorted(at for r, at in handed if "@example.org" in r)
    assert max(others) < sorted(per_hour)[1], "the other domain waited for gmail's throttle"
    deferrals = rows(
        run,
        "SELECT data->>'reason', data->>'until' FROM dripdrop.message_events"
        " WHERE tenant_key = %s AND event_type = 'deferred'",
        key,
    )
    assert deferrals and {reason for reason, _ in deferrals} == {"domain_throttle"}
    assert {datetime.fromisoformat(until).minute for _, until in deferrals} == {0}
    assert worker.alive(), worker.log_tail()

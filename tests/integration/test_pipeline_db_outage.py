"""PostgreSQL unreachable: the worker waits instead of dead-lettering or committing, and a
worker stopped meanwhile exits without committing the event in hand (its next owner
replays it). Nothing is lost: a worker that can reach the database processes everything."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from streams.api import DripDrop
from streams.mailsink import SmtpSink
from streams.pipeline import EXIT_UNCOMMITTED
from streams.settings import Settings
from tests.integration.pipeline_support import (
    build_outbound,
    enroll_many,
    rows,
    sent_rows,
    start_worker,
)
from tests.integration.support import WorkerProcess, wait_for


def test_a_worker_stopped_during_an_outage_commits_nothing_and_loses_nothing(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics()
    tenant = f"pg-{uuid.uuid4().hex[:8]}"
    with DripDrop(settings) as dd:
        world = build_outbound(dd, smtp, tenant_key=tenant, steps=1)
        (enrollment,) = enroll_many(dd, world, tenant, 1)

    # Nothing listens on port 9: every connection is refused.
    cut_off = settings.model_copy(
        update={"database_url": "postgresql://dripdrop@127.0.0.1:9/dripdrop"}
    )
    worker = start_worker(worker_factory, cut_off)
    wait_for(
        lambda: "failed (attempt 2" in worker.log_path.read_text(errors="replace"),
        timeout=90,
        what="the worker retrying while PostgreSQL is unreachable",
    )
    assert worker.alive(), worker.log_tail()
    assert worker.stop(timeout=90) == EXIT_UNCOMMITTED, worker.log_tail()
    assert "exiting without committing" in worker.log_path.read_text(errors="replace")
    assert not rows(settings, "SELECT 1 FROM dripdrop.enrollments WHERE id = %s", enrollment)

    healthy = start_worker(worker_factory, settings)
    wait_for(lambda: sent_rows(settings, enrollment), timeout=60, what="the enrollment sent")
    assert len(sent_rows(settings, enrollment)) == 1
    assert healthy.stop() == 0, healthy.log_tail()
    assert not rows(
        settings,
        "SELECT 1 FROM dripdrop.step_executions WHERE enrollment_id = %s AND status <> 'sent'",
        enrollment,
    )

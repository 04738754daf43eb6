"""A worker stopped gracefully (SIGTERM) right after enrollments' last steps went out.

Reported open in issue 11: an enrollment's final ``completed`` row was lost at a graceful
stop. The stop lands at the first ``enrollment.completed`` event: the processor has decided
the completions (its table says ``completed``) while their row operations are still on
their way through ``sink``, and other results are still in ``dispatch-results``. After a
restart on the same data directory every row must reach ``completed`` and nothing may be
sent twice (SPEC §14: nothing a worker decided is lost at a stop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    build_outbound,
    enroll_many,
    rows,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

ENROLLMENTS = 20
STEPS = 2


def _states(settings: Settings, ids: list[str]) -> dict[str, str]:
    found = rows(
        settings,
        "SELECT id::text, state FROM dripdrop.enrollments WHERE id = ANY(%s::uuid[])",
        ids,
    )
    return {r[0]: r[1] for r in found}


def test_sigterm_at_the_first_completion_keeps_every_completed_row(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    world = build_outbound(client, smtp, tenant_key=key, steps=STEPS)
    telemetry = TopicReader(settings, "telemetry")
    worker = start_worker(worker_factory)
    ids = enroll_many(client, world, key, ENROLLMENTS)
    telemetry.wait(telemetry_named("enrollment.completed"), timeout=90, what="a completion")
    assert worker.stop() == 0, worker.log_tail()
    telemetry.close()
    at_stop = _states(settings, ids)

    restarted = start_worker(worker_factory)

    def all_completed() -> dict[str, str] | None:
        assert restarted.alive(), restarted.log_tail()
        states = _states(settings, ids)
        done = len(states) == ENROLLMENTS and set(states.values()) == {"completed"}
        return states if done else None

    try:
        wait_for(all_completed, timeout=60, interval=0.5, what="every enrollment completed")
    except AssertionError as exc:
        now: dict[str, Any] = _states(settings, ids)
        raise AssertionError(f"{exc}\nrows after the stop: {at_stop}\nrows now: {now}") from None
    sent = [m.header("Message-ID") for m in smtp.messages]
    assert len(sent) == ENROLLMENTS * STEPS and len(set(sent)) == len(sent)
    assert restarted.stop() == 0, restarted.log_tail()

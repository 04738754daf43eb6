"""A changelog topic deleted under a running worker (seen: another run's cleanup took it).

The changelog records of the next commit are refused (unknown topic), so the checkpoint
never lets that commit happen and the worker stops; where Faust notices first and refuses
the table write itself (``PartitionsMismatch``: the helper of issue 11 saw every event
dead-lettered as a ``bug`` and committed, i.e. lost), the worker exits 75 without
committing. Either way no event is dead-lettered as a bug, and a new worker (which
declares the topic again) processes every enrollment the first one could not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.robust_support import (
    TopicReader,
    build_world,
    enroll_many,
    rows,
    wait_ready,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for


# In make test-long, not make test: measured flaky on 2026-12-08 at the previous session's
# commit and at this one alike (4 of 12 runs): after the deleted changelog, the restarted
# worker sometimes processes none of the five enrollments within 120 s (cause not found
# yet, see the closing note of issue 11); the other failure, the crashed worker never
# exiting, is fixed in streams/worker.py.
@pytest.mark.long
def test_a_deleted_changelog_stops_the_worker_uncommitted_and_nothing_is_lost(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics()
    tenant = f"gone-{uuid.uuid4().hex[:8]}"
    letters = TopicReader(settings, "dead-letter")
    try:
        with DripDrop(settings) as dd:
            world = build_world(dd, smtp, tenant=tenant, caps=(100,), steps=1)
            first = worker_factory(settings)
            wait_ready(first)
            enroll_many(dd, world, 1)
            wait_for(
                lambda: rows(
                    settings, "SELECT 1 FROM dripdrop.enrollments WHERE tenant_key = %s", tenant
                ),
                timeout=60,
                what="the first enrollment's row",
            )
            admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
            changelog = f"{settings.app_id}-enrollments-changelog"
            for future in admin.delete_topics([changelog], operation_timeout=30).values():
                future.result()
            enroll_many(dd, world, 5, start=1)
            wait_for(lambda: not first.alive(), timeout=150, what="the worker to stop")
            assert first.proc.returncode != 0, first.log_tail()
            first.kill()  # reap it, close its log
            assert not [r for r in letters.poll(2.0) if r["reason"] == "bug"]
        second = worker_factory(settings)  # declares the changelog again, replays the inputs
        wait_for(
            lambda: (
                rows(
                    settings,
                    "SELECT count(*) FROM dripdrop.enrollments WHERE tenant_key = %s",
                    tenant,
                )[0][0]
                == 6
            ),
            timeout=120,
            what="all six enrollments' rows",
        )
        assert second.stop() == 0, second.log_tail()
    finally:
        letters.close()

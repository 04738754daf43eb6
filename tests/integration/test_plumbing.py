"""Plumbing: confluent-kafka producer → broker → Faust worker (subprocess) → PostgreSQL row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import psycopg

from streams.settings import Settings
from tests.integration.support import WorkerProcess, producer, wait_for


def test_ping_record_from_confluent_producer_lands_as_row_via_worker(
    settings: Settings,
    topics: Callable[..., list[str]],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics("ping")
    ping_ids = [str(uuid.uuid4()) for _ in range(5)]
    out = producer(settings)
    for i, ping_id in enumerate(ping_ids):
        out.produce(
            settings.topic("ping"),
            key=f"tenant-{i}".encode(),
            value=json.dumps({"ping_id": ping_id, "n": i}).encode(),
        )
    assert out.flush(10) == 0

    worker = worker_factory()

    def rows() -> list[tuple[str, int]] | None:
        if not worker.alive():
            raise AssertionError(f"worker died:\n{worker.log_tail()}")
        try:
            with psycopg.connect(settings.database_url) as conn:
                found = conn.execute(
                    "SELECT ping_id, (body->>'n')::int FROM dripdrop_diag.pings"
                    " WHERE ping_id = ANY(%s) ORDER BY 2",
                    (ping_ids,),
                ).fetchall()
        except psycopg.errors.UndefinedTable:
            return None
        return found if len(found) == len(ping_ids) else None

    found = wait_for(rows, timeout=90, what="ping rows in PostgreSQL")
    assert [row[0] for row in found] == ping_ids
    assert [row[1] for row in found] == [0, 1, 2, 3, 4]
    assert worker.stop() == 0, worker.log_tail()

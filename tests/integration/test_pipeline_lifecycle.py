"""Lifecycle mode through the real pipeline (SPEC §6): no pin, no pool, per-step rotation.

Each step goes out through the next of the tenant's active adapters; no threading headers
unless the step asks for thread continuity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    create_mailbox,
    enrollment_state,
    sent_rows,
    start_worker,
    tenant,
    wire,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2})


def test_lifecycle_steps_rotate_adapters_and_thread_only_on_continuity(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    active = [create_mailbox(client, smtp, tenant_key=key, name=f"life{i}") for i in range(3)]
    create_mailbox(client, smtp, tenant_key=key, name="retired", active=False)
    sequence = client.create_sequence(tenant_key=key, key="onboarding")
    version = client.create_sequence_version(
        sequence.id, tenant_key=key, version=1, mode="lifecycle"
    )
    steps = [
        client.create_step(
            version.id,
            tenant_key=key,
            key=f"s{position}",
            position=position,
            subject_template=f"Welcome {position}",
            body_template="Hi {{ first_name }}",
            thread_continuity=position == 2,
        )
        for position in range(4)
    ]
    worker = start_worker(worker_factory)
    enrollment_id = str(
        client.enroll(
            tenant_key=key,
            sequence_id=sequence.id,
            subscriber_id="u-1",
            recipient="user@example.org",
            data={"first_name": "Lin"},
        ).enrollment_id
    )

    def four_sent() -> list[tuple[Any, ...]] | None:
        assert worker.alive(), worker.log_tail()
        found = sent_rows(settings, enrollment_id)
        return found if len(found) == 4 else None

    chain = wait_for(four_sent, timeout=60, what="four lifecycle sends")
    assert [x[0] for x in chain] == [s.id for s in steps]
    # Rotation over the active adapters (ordered by id), never the inactive one.
    rotation = sorted(a.id for a in active)
    assert [x[3] for x in chain] == [rotation[0], rotation[1], rotation[2], rotation[0]]
    ids = [wire(x[1]) for x in chain]
    headers = [x[2] for x in chain]
    assert headers[0] == {"Message-ID": ids[0]}
    assert headers[1] == {"Message-ID": ids[1]}
    # Thread continuity: under the previous send of the enrollment.
    assert headers[2] == {
        "Message-ID": ids[2],
        "In-Reply-To": ids[1],
        "References": f"{ids[0]} {ids[1]}",
    }
    assert headers[3] == {"Message-ID": ids[3]}
    received = {
        m.header("Message-ID"): m
        for m in wait_for(lambda: smtp.messages if len(smtp.messages) >= 4 else None)
    }
    assert received[ids[2]].header("In-Reply-To") == ids[1]
    assert received[ids[3]].header("In-Reply-To") is None
    # The last result completes the enrollment a moment after its mail arrived: poll.
    state = wait_for(
        lambda: (
            s if (s := enrollment_state(settings, enrollment_id)) and s[0] != "active" else None
        ),
        what="enrollment row completed",
    )
    assert state == ("completed", None, None)  # no pin in lifecycle mode
    assert worker.stop() == 0, worker.log_tail()

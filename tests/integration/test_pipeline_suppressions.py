"""Suppression lists through the real pipeline (SPEC §7, issue 14 item 4).

Entries added through the API reach the worker on ``health-signals``; the worker refuses a
suppressed enrollment (``rejected``/``suppressed``, no pin) and skips a suppressed send,
for an address and for a whole domain. Another tenant's entries change nothing. Rows in
``dripdrop.suppressions`` come from the worker's sink; a removed entry sends again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    build_outbound,
    enrollment_state,
    rows,
    scaled,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

DAY_SECONDS = 4.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2})


def _enroll(dd: DripDrop, world: Any, key: str, recipient: str) -> str:
    return str(
        dd.enroll(
            tenant_key=key,
            sequence_id=world.sequence.id,
            subscriber_id=recipient,
            recipient=recipient,
            data={"first_name": "P"},
        ).enrollment_id
    )


def _entries(settings: Settings, key: str) -> set[tuple[str, str, str]]:
    return {
        (str(r[0]), str(r[1]), str(r[2]))
        for r in rows(
            settings,
            "SELECT recipient_normalized, reason, source FROM dripdrop.suppressions"
            " WHERE tenant_key = %s",
            key,
        )
    }


def _received(smtp: SmtpSink, recipient: str) -> int:
    return sum(recipient in m.rcpt_tos for m in smtp.messages)


def test_suppressed_addresses_and_domains_never_receive_mail(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key, other = tenant(), tenant()
    # Two steps, the second two simulated days (8 s real) after the first.
    world = build_outbound(client, smtp, tenant_key=key, steps=2, delays=(0, 2 * 86400))
    other_world = build_outbound(client, smtp, tenant_key=other, steps=1)
    worker_settings, _clock = scaled(
        settings, day_seconds=DAY_SECONDS, epoch=datetime(2031, 7, 1, tzinfo=UTC)
    )
    telemetry = TopicReader(settings, "telemetry")
    worker = start_worker(worker_factory, worker_settings)

    # Enroll time: an address and a domain of tenant `key` (and one entry of `other`).
    client.add_suppression("Blocked@Example.org ", tenant_key=key, reason="manual", source="crm")
    client.add_suppression("@banned.example", tenant_key=key, reason="complaint")
    client.add_suppression("allowed@example.org", tenant_key=other, reason="manual")
    wait_for(lambda: len(_entries(settings, key)) == 2 or None, what="the worker's rows")
    assert _entries(settings, key) == {
        ("blocked@example.org", "manual", "crm"),
        ("@banned.example", "complaint", "api"),
    }
    refused = [
        _enroll(client, world, key, "blocked@example.org"),
        _enroll(client, world, key, "anyone@banned.example"),
    ]
    allowed = _enroll(client, world, key, "allowed@example.org")
    # The other tenant: `key`'s entries do not apply there.
    across = [
        _enroll(client, other_world, other, "blocked@example.org"),
        _enroll(client, other_world, other, "someone@banned.example"),
    ]

    def settled(ids: list[str], state: str) -> list[Any] | None:
        assert worker.alive(), worker.log_tail()
        found = [enrollment_state(settings, e) for e in ids]
        return found if all(f is not None and f[0] == state for f in found) else None

    # Refused before any pin: no adapter, no slot taken, nothing sent.
    assert wait_for(lambda: settled(refused, "rejected"), what="refused") == [
        ("rejected", "suppressed", None),
        ("rejected", "suppressed", None),
    ]
    wait_for(lambda: settled(across, "completed"), what="the other tenant's sends")
    assert _received(smtp, "blocked@example.org") == 1  # the other tenant's send only
    assert _received(smtp, "someone@banned.example") == 1
    assert _received(smtp, "anyone@banned.example") == 0
    wait_for(lambda: _received(smtp, "allowed@example.org") == 1 or None, what="allowed sent")
    telemetry.wait(telemetry_named("dispatch.adapter_pinned", enrollment_id=allowed))
    pinned = {
        attrs_of(r)["enrollment_id"]
        for r in telemetry.poll()
        if r["name"] == "dispatch.adapter_pinned"
    }
    assert allowed in pinned and not pinned & set(refused)

    # Send time: the first step of `late` went out; then the address and the domain of
    # `late2` are suppressed: their second step is skipped, never sent.
    late = _enroll(client, world, key, "late@example.org")
    late2 = _enroll(client, world, key, "first@late.example")
    wait_for(
        lambda: (
            (
                _received(smtp, "late@example.org") == 1
                and _received(smtp, "first@late.example") == 1
            )
            or None
        ),
        what="first steps",
    )
    client.add_suppression("late@example.org", tenant_key=key, reason="unsubscribe")
    client.add_suppression("late.example", tenant_key=key, reason="provider_block")
    wait_for(lambda: len(_entries(settings, key)) == 4 or None, what="the new rows")
    skipped = telemetry.wait(
        lambda r: r["name"] == "dispatch.skipped" and attrs_of(r)["enrollment_id"] in {late, late2},
        count=2,
        timeout=30,
        what="second steps skipped",
    )
    assert {attrs_of(r)["reason"] for r in skipped} == {"suppressed"}
    wait_for(lambda: settled([late, late2, allowed], "completed"), what="completed")
    assert _received(smtp, "late@example.org") == 1
    assert _received(smtp, "first@late.example") == 1
    assert _received(smtp, "allowed@example.org") == 2  # both steps

    # Removal: the entry's row goes, and a new enrollment to the address sends again.
    client.remove_suppression("blocked@example.org", tenant_key=key)
    wait_for(lambda: len(_entries(settings, key)) == 3 or None, what="row removed")
    again = str(
        client.enroll(
            tenant_key=key,
            sequence_id=world.sequence.id,
            subscriber_id="blocked-again",
            recipient="blocked@example.org",
            data={"first_name": "B"},
        ).enrollment_id
    )
    wait_for(lambda: settled([again], "completed"), what="sent after removal")
    assert _received(smtp, "blocked@example.org") == 3  # the other tenant's + two steps
    assert worker.alive(), worker.log_tail()

"""Failures never march a sequence on (SPEC §7), through the real pipeline and SMTP server.

* 550 at RCPT: a hard bounce — the recipient is suppressed, the enrollment ends ``bounced``
  with no later step, and the bounce counts toward the adapter's bounce rate (one of 20 is
  5 %, over the 2 % threshold: the mailbox rests).
* 451 at RCPT (greylisting): the same send goes again later — seconds later, never within
  one — and is accepted once; the sequence goes on.
* A template that cannot render: the enrollment ends ``failed`` with the reason; nothing
  is sent for it, and its later steps never go out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.api import DripDrop
from streams.mailsink import SmtpSink
from streams.pipeline import RETRY_REAL_SECONDS
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    build_outbound,
    enroll_many,
    enrollment_state,
    rows,
    scaled,
    sent_rows,
    start_worker,
    telemetry_named,
    tenant,
    wire,
)
from tests.integration.support import WorkerProcess, wait_for

MONTH = 30 * 86400


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2})


def test_hard_bounce_at_rcpt_suppresses_stops_and_counts_toward_the_bounce_rate(
    settings: Settings, client: DripDrop, worker_factory: Callable[..., WorkerProcess]
) -> None:
    key = tenant()
    refused = "prospect7@example.org"
    with SmtpSink(refuse=[refused]) as smtp:
        # Step 2 is a month away: it would go out only if the bounce were marched past.
        world = build_outbound(client, smtp, tenant_key=key, steps=2, delays=(0, MONTH))
        mailbox = world.adapters[0].id
        worker_settings, _clock = scaled(
            settings, day_seconds=60.0, epoch=datetime(2031, 7, 1, tzinfo=UTC)
        )
        telemetry = TopicReader(settings, "telemetry")
        worker = start_worker(worker_factory, worker_settings)
        ids = enroll_many(client, world, key, 20)
        bounced = ids[7]

        def state() -> tuple[Any, ...] | None:
            assert worker.alive(), worker.log_tail()
            found = enrollment_state(settings, bounced)
            return found if found is not None and found[0] == "bounced" else None

        assert wait_for(state, what="bounced enrollment") == ("bounced", "bounce", mailbox)
        [event] = telemetry.wait(telemetry_named("dispatch.bounced", enrollment_id=bounced))
        assert attrs_of(event)["error"] == "recipient_refused: 550 5.1.1"
        # Counted in the bounce rate: 1 of 20 sends is over the 2 % threshold.
        telemetry.wait(telemetry_named("policy.bounce_threshold", adapter_id=mailbox))
        assert rows(
            settings,
            "SELECT recipient, reason FROM dripdrop.suppressions WHERE tenant_key = %s",
            key,
        ) == [(refused, "bounce")]
        others = [i for i in ids if i != bounced]
        wait_for(
            lambda: all(len(sent_rows(settings, i)) == 1 for i in others) or None,
            what="first steps of the others",
        )
        assert sent_rows(settings, bounced) == []
        assert not [m for m in smtp.messages if refused in m.rcpt_tos]
        assert all(enrollment_state(settings, i)[0] == "active" for i in others)  # type: ignore[index]
        assert not [r for r in telemetry.poll() if r["name"] == "dispatch.failed"]
        telemetry.close()


def test_greylisted_recipient_is_retried_seconds_later_and_sent_once(
    settings: Settings, client: DripDrop, worker_factory: Callable[..., WorkerProcess]
) -> None:
    key = tenant()
    greylisted = "prospect0@example.org"
    with SmtpSink(defer={greylisted: 2}) as smtp:
        world = build_outbound(client, smtp, tenant_key=key, steps=2, delays=(0, 3600))
        worker_settings, _clock = scaled(
            settings, day_seconds=240.0, epoch=datetime(2031, 7, 1, tzinfo=UTC)
        )
        telemetry = TopicReader(settings, "telemetry")
        worker = start_worker(worker_factory, worker_settings)
        [enrollment] = enroll_many(client, world, key, 1)

        def both_steps() -> list[tuple[Any, ...]] | None:
            assert worker.alive(), worker.log_tail()
            found = sent_rows(settings, enrollment)
            return found if len(found) == 2 else None

        first, second = wait_for(both_steps, timeout=90, what="both steps sent")
        retries = telemetry.wait(
            telemetry_named("dispatch.retry_scheduled", enrollment_id=enrollment), count=2
        )
        assert [attrs_of(r)["cause"] for r in retries] == ["recipient", "recipient"]
        assert [attrs_of(r)["retries"] for r in retries] == [1, 2]
        # Not within a second: each try waited the back-off (5 s real, then 10 s).
        attempts = [at for rcpt, at in smtp.handler.deferred if rcpt == greylisted]
        accepted = [m for m in smtp.messages if greylisted in m.rcpt_tos]
        assert len(attempts) == 2 and len(accepted) == 2  # step 1 once, step 2 once
        assert attempts[1] - attempts[0] >= RETRY_REAL_SECONDS * 0.9
        # The follow-up threads under the greylisted (and finally accepted) first step.
        assert second[2]["In-Reply-To"] == wire(first[1])  # out_message_id is stored bare
        assert enrollment_state(settings, enrollment)[0] == "completed"  # type: ignore[index]
        telemetry.close()


def test_template_error_fails_the_enrollment_and_nothing_more_goes_out(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    world = build_outbound(client, smtp, tenant_key=key, steps=3, delays=(0, 60, 60))
    worker_settings, _clock = scaled(
        settings, day_seconds=240.0, epoch=datetime(2031, 7, 1, tzinfo=UTC)
    )
    worker = start_worker(worker_factory, worker_settings)
    [good] = enroll_many(client, world, key, 1)
    broken = str(
        client.enroll(
            tenant_key=key,
            sequence_id=world.sequence.id,
            subscriber_id="no-name",
            recipient="noname@example.org",
            data={},  # the subject needs {{ first_name }}
        ).enrollment_id
    )

    def ended(enrollment_id: str, state: str) -> Callable[[], tuple[Any, ...] | None]:
        def check() -> tuple[Any, ...] | None:
            assert worker.alive(), worker.log_tail()
            found = enrollment_state(settings, enrollment_id)
            return found if found is not None and found[0] == state else None

        return check

    assert wait_for(ended(broken, "failed"), what="failed enrollment")[1] == "template_error"
    wait_for(ended(good, "completed"), what="the other one completes")
    assert len(sent_rows(settings, good)) == 3
    assert sent_rows(settings, broken) == []
    assert not [m for m in smtp.messages if "noname@example.org" in m.rcpt_tos]
    # One failed step event, nothing for the steps after it.
    events = rows(
        settings,
        "SELECT event_type FROM dripdrop.message_events WHERE enrollment_id = %s",
        broken,
    )
    assert [e for (e,) in events if e == "failed"] == ["failed"]

"""The company-level stop through a real worker (SPEC §13): API → Kafka → worker →
PostgreSQL → SMTP (aiosmtpd), the reply handed in with ``ingest_inbound_message``.

Tenant A's version opted in; ann, bob (acme.com) and cy (other.com) got step 1. Ann replies:
she ends ``replied``, bob ``stopped`` (``company_stopped``) and never gets step 2, cy gets
it. Tenant B's prospect at acme.com, in its own opted-in version, is not touched: the stop
is the tenant's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    create_mailbox,
    enrollment_state,
    rows,
    scaled,
    start_worker,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, enrolled_id, wait_for

TWO_DAYS = 2 * 86400


def _world(dd: DripDrop, smtp: SmtpSink, key: str) -> tuple[str, str]:
    """An opted-in outbound sequence of two steps (the second two days later)."""
    mailbox = create_mailbox(dd, smtp, tenant_key=key, name="mbox")
    pool = dd.create_adapter_pool(tenant_key=key, name="sales")
    dd.add_pool_member(pool.id, tenant_key=key, adapter_id=mailbox.id)
    sequence = dd.create_sequence(tenant_key=key, key="cold")
    version = dd.create_sequence_version(
        sequence.id,
        tenant_key=key,
        version=1,
        mode="outbound",
        config={"pool_id": pool.id},
        company_stop=True,
    )
    assert version.company_stop
    for position in range(2):
        dd.create_step(
            version.id,
            tenant_key=key,
            key=f"s{position}",
            position=position,
            subject_template="Hello" if position == 0 else "Re: Hello",
            body_template=f"Step {position}",
            delay_seconds=position * TWO_DAYS,
        )
    return mailbox.id, sequence.id


def test_a_reply_stops_the_colleagues_in_the_same_tenant_only(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    a, b = tenant(), tenant()
    mailbox, seq_a = _world(client, smtp, a)
    _, seq_b = _world(client, smtp, b)
    run, _ = scaled(settings, day_seconds=4.0, epoch=datetime(2031, 7, 1, 9, tzinfo=UTC))
    worker = start_worker(worker_factory, run)
    people = {
        (a, "ann@acme.com"): seq_a,
        (a, "bob@acme.com"): seq_a,
        (a, "cy@other.com"): seq_a,
        (b, "bob@acme.com"): seq_b,
    }
    ids = {
        who: enrolled_id(
            client.enroll(
                tenant_key=who[0], sequence_id=seq, subscriber_id=who[1], recipient=who[1]
            )
        )
        for who, seq in people.items()
    }

    def sent(enrollment: str) -> list[Any]:
        return rows(
            run,
            "SELECT out_message_id FROM dripdrop.step_executions"
            " WHERE enrollment_id = %s AND status = 'sent' ORDER BY inserted_at",
            enrollment,
        )

    wait_for(lambda: all(sent(e) for e in ids.values()) or None, timeout=60, what="step 1")
    ann = ids[(a, "ann@acme.com")]
    client.ingest_inbound_message(
        mailbox,
        {
            "message_id": f"<{uuid.uuid4()}@acme.com>",
            "in_reply_to": sent(ann)[0][0],
            "from": "Ann <ann@acme.com>",
            "to": "mbox@mbox.example",
            "subject": "Re: Hello",
            "body_text": "Not for us, thanks.",
            "intent": "reply",
        },
        tenant_key=a,
    )

    def state(who: tuple[str, str]) -> tuple[Any, ...]:
        assert worker.alive(), worker.log_tail()
        return enrollment_state(run, ids[who]) or ()

    wait_for(lambda: state((a, "bob@acme.com"))[:1] == ("stopped",) or None, what="bob stopped")
    assert state((a, "ann@acme.com"))[:2] == ("replied", "reply")
    assert state((a, "bob@acme.com"))[:2] == ("stopped", "company_stopped")
    live = [(a, "cy@other.com"), (b, "bob@acme.com")]
    wait_for(
        lambda: all(len(sent(ids[who])) == 2 for who in live) or None,
        timeout=60,
        what="step 2 for the ones left",
    )
    # The last result completes them a moment after its row reads sent.
    wait_for(
        lambda: all(state(who)[0] == "completed" for who in live) or None,
        what="the ones left completed",
    )
    assert len(sent(ids[(a, "bob@acme.com")])) == 1
    assert worker.stop() == 0, worker.log_tail()

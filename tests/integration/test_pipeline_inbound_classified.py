"""Inbound records produced without an intent are classified by the processor (SPEC §8).

Real Kafka, PostgreSQL and worker (subprocess). A host hands over a delivery report,
an out-of-office and an auto-reply through ``ingest_inbound_message`` without an
intent: the report is a hard bounce (recipient suppressed, enrollment ``bounced``,
counted toward the mailbox's bounce rate: one in twenty sends breaches 2 %), the OOO
defers the next step to the morning of its return date, the auto-reply changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dripdrop_core.classify import parse_mail
from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    build_outbound,
    enroll_many,
    enrollment_state,
    rows,
    scaled,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "inbound"
DAY_SECONDS = 6.0


def _as_host_record(raw: bytes) -> dict[str, Any]:
    """What a host's own pump would hand over: the fields, and no intent."""
    mail = parse_mail(raw)
    assert mail.message_id is not None
    return {
        "message_id": mail.message_id,
        "in_reply_to": mail.in_reply_to,
        "references": list(mail.references),
        "from": mail.from_,
        "to": mail.to,
        "subject": mail.subject,
        "body_text": mail.body_text,
        "body_html": mail.body_html,
        "headers": mail.headers,
    }


def test_unclassified_delivery_report_is_a_hard_bounce_counted_and_suppressed(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    world = build_outbound(client, smtp, tenant_key=key, steps=2, delays=(0, 30 * 86400))
    mailbox = world.adapters[0].id
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")  # after the worker created the topics
    enrolled = enroll_many(client, world, key, 20)  # the minimum sample of the bounce rate

    def sent() -> list[tuple[Any, ...]] | None:
        assert worker.alive(), worker.log_tail()
        found = rows(
            settings,
            "SELECT out_message_id, recipient FROM dripdrop.step_executions"
            " WHERE adapter_id = %s AND status = 'sent' ORDER BY inserted_at",
            mailbox,
        )
        return found if len(found) >= 20 else None

    out_id, recipient = wait_for(sent, what="20 sends")[0]
    # Exchange Online's report, about our send: the original Message-ID is only inside it.
    raw = (CORPUS / "bounce" / "exchange_online_ndr.eml").read_bytes()
    raw = raw.replace(b"0190f402@send.example.com", str(out_id).strip("<>").encode())
    raw = raw.replace(b"left.company@contoso.com", str(recipient).encode())
    record = _as_host_record(raw)
    record.update(in_reply_to=None, references=[])  # correlation must come from the report
    client.ingest_inbound_message(mailbox, record, tenant_key=key)

    ingested = telemetry.wait(telemetry_named("ingest.inbound_message", intent="bounce"))[0]
    assert attrs_of(ingested)["classified_by"] == "rfc3464"
    telemetry.wait(telemetry_named("policy.bounce_threshold", adapter_id=mailbox))

    def bounced() -> list[tuple[Any, ...]] | None:
        states = [enrollment_state(settings, e) for e in enrolled]
        return [s for s in states if s is not None and s[0] == "bounced"] or None

    assert wait_for(bounced, what="bounced enrollment") == [("bounced", "bounce", mailbox)]
    assert rows(
        settings, "SELECT recipient FROM dripdrop.suppressions WHERE tenant_key = %s", key
    ) == [(recipient,)]
    assert worker.stop() == 0, worker.log_tail()
    telemetry.close()


def test_unclassified_ooo_defers_next_step_and_auto_reply_does_not_stop(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    world = build_outbound(client, smtp, tenant_key=key, steps=2, delays=(0, 86400))
    worker_settings, clock = scaled(
        settings, day_seconds=DAY_SECONDS, epoch=datetime(2031, 7, 1, 6, tzinfo=UTC)
    )
    worker = start_worker(worker_factory, worker_settings)
    telemetry = TopicReader(settings, "telemetry")
    away, auto = enroll_many(client, world, key, 2)
    for enrollment in (away, auto):
        telemetry.wait(
            telemetry_named("dispatch.sent", enrollment_id=enrollment), timeout=60, what="step 1"
        )
    out_ids = dict(
        rows(
            settings,
            "SELECT enrollment_id::text, out_message_id FROM dripdrop.step_executions"
            " WHERE enrollment_id = ANY(%s::uuid[]) AND status = 'sent'",
            [away, auto],
        )
    )
    now = clock.now()
    back = (now + timedelta(days=4)).date()
    mailbox = world.adapters[0].id
    ooo = (CORPUS / "ooo" / "outlook_oof_en.eml").read_bytes()
    ooo_record = _as_host_record(ooo) | {
        "in_reply_to": out_ids[away],
        "body_text": f"I am out of the office and back on {back:%d %B %Y}.",
        "received_at": now,
    }
    ticket = _as_host_record((CORPUS / "auto_reply" / "zendesk_ticket_received.eml").read_bytes())
    ticket |= {"in_reply_to": out_ids[auto], "received_at": now}
    client.ingest_inbound_message(mailbox, ooo_record, tenant_key=key)
    client.ingest_inbound_message(mailbox, ticket, tenant_key=key)

    seen = {
        attrs_of(r)["enrollment_id"]: attrs_of(r)
        for r in telemetry.wait(telemetry_named("ingest.inbound_message"), count=2)
    }
    assert (seen[away]["intent"], seen[away]["classified_by"]) == ("ooo", "outlook_oof")
    assert (seen[auto]["intent"], seen[auto]["classified_by"]) == ("auto_reply", "auto_submitted")

    def second(enrollment: str) -> dict[str, Any]:
        assert worker.alive(), worker.log_tail()
        return telemetry.wait(
            telemetry_named("dispatch.sent", enrollment_id=enrollment),
            count=2,
            timeout=10 * DAY_SECONDS,
            what=f"step 2 of {enrollment}",
        )[1]

    # The auto-reply stopped nothing: step 2 went out a day later, before the OOO's date.
    morning = datetime(back.year, back.month, back.day, 9, tzinfo=UTC)  # recipient in UTC
    assert second(auto)["at"] < morning
    # The OOO moved step 2 to the recipient's morning of the first day back.
    assert second(away)["at"] >= morning
    for enrollment in (away, auto):
        state = enrollment_state(settings, enrollment)
        assert state is not None and state[0] not in ("replied", "stopped", "bounced")
    assert worker.stop() == 0, worker.log_tail()
    telemetry.close()

"""An ambiguous send holds its enrollment until an operator resolves it (issue 11), end to end.

Two prospects in a two-step sequence with no delay between the steps; the SMTP server
reads each first mail and drops the connection without a reply, so the sender cannot know
whether it was kept: ``ambiguous``. Before the fix the processor scheduled step 2 at once,
threaded under mail the prospect may never have received. Now nothing more goes out until
``resolve_ambiguous_send``: prospect A is resolved ``sent`` (step 2 follows, threaded under
step 1), prospect B ``not sent`` (step 1 is re-issued with its Message-ID, then step 2).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration._api_fixtures import run_cli
from tests.integration.pipeline_support import (
    TopicReader,
    build_outbound,
    rows,
    start_worker,
    telemetry_named,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, enrolled_id, wait_for

A, B = "prospect-a@example.org", "prospect-b@example.org"


def executions(settings: Settings, enrollment_id: str) -> list[tuple[Any, ...]]:
    return rows(
        settings,
        "SELECT se.id::text, s.key, se.status, se.out_message_id FROM dripdrop.step_executions se"
        " JOIN dripdrop.steps s ON s.id = se.step_id WHERE se.enrollment_id = %s"
        " ORDER BY s.position",
        enrollment_id,
    )


def test_ambiguous_send_holds_the_enrollment_until_resolved_sent_or_not_sent(
    settings: Settings, client: DripDrop, worker_factory: Callable[..., WorkerProcess]
) -> None:
    tenant = f"acct-{uuid.uuid4().hex[:8]}"
    with SmtpSink(drop_after_data={A, B}) as smtp:
        world = build_outbound(client, smtp, tenant_key=tenant, steps=2, delays=(0, 0))
        worker = start_worker(worker_factory)
        telemetry = TopicReader(settings, "telemetry")
        try:
            enrolled = {
                recipient: enrolled_id(
                    client.enroll(
                        tenant_key=tenant,
                        sequence_id=world.sequence.id,
                        subscriber_id=recipient,
                        recipient=recipient,
                        data={"first_name": "P"},
                    )
                )
                for recipient in (A, B)
            }
            for recipient, enrollment_id in enrolled.items():
                telemetry.wait(
                    telemetry_named("send.ambiguous", enrollment_id=enrollment_id),
                    timeout=60,
                    what=f"send.ambiguous of {recipient}",
                )
            held = {s.enrollment_id: s for s in client.list_ambiguous_sends(tenant_key=tenant)}
            assert set(held) == set(enrolled.values())
            time.sleep(3)  # step 2 was due at once: it would be out by now
            for enrollment_id in enrolled.values():
                [(_, key, status, _)] = executions(settings, enrollment_id)
                assert (key, status) == ("s0", "ambiguous")
            assert smtp.messages == [] and len(smtp.dropped) == 2
            explained = run_cli(
                settings, "enrollment", "explain", enrolled[A], "--tenant", tenant, "--json"
            )
            assert explained.exit_code == 0, explained.stderr
            why = json.loads(explained.stdout)["why"]
            assert "ambiguous" in why and "dripdrop sends resolve" in why
            first_ids = {e: f"<{held[e].message_id}>" for e in held}  # stored bare

            smtp.behaviour.drop_after_data.clear()  # the operator checked: A has it, B not
            a, b = enrolled[A], enrolled[B]
            client.resolve_ambiguous_send(held[a].step_execution_id, tenant_key=tenant, sent=True)
            client.resolve_ambiguous_send(held[b].step_execution_id, tenant_key=tenant, sent=False)

            def delivered() -> dict[str, list[Any]] | None:
                assert worker.alive(), worker.log_tail()
                got: dict[str, list[Any]] = {A: [], B: []}
                for message in smtp.messages:
                    got[message.rcpt_tos[0]].append(message)
                return got if (len(got[A]), len(got[B])) == (1, 2) else None

            got = wait_for(delivered, timeout=60, what="A's step 2, B's step 1 and 2")
            [a_step2] = got[A]
            assert a_step2.header("In-Reply-To") == first_ids[a]
            b_step1, b_step2 = sorted(got[B], key=lambda m: m.header("In-Reply-To") or "")
            assert b_step1.header("Message-ID") == first_ids[b]  # re-issued: the same mail
            assert b_step2.header("In-Reply-To") == first_ids[b]
            for recipient in (A, B):
                statuses = [(r[1], r[2]) for r in executions(settings, enrolled[recipient])]
                assert statuses == [("s0", "sent"), ("s1", "sent")], (recipient, statuses)
            wait_for(
                lambda: (
                    rows(
                        settings,
                        "SELECT count(*) FROM dripdrop.enrollments"
                        " WHERE tenant_key = %s AND state = 'completed'",
                        tenant,
                    )[0][0]
                    == 2
                ),
                timeout=30,
                what="both enrollments completed",
            )
            assert client.list_ambiguous_sends(tenant_key=tenant) == []
            assert len(smtp.messages) == 3  # nothing sent twice
        finally:
            telemetry.close()
    assert worker.stop() == 0, worker.log_tail()

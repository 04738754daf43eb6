"""``dripdrop audit replay`` against real topics and PostgreSQL (SPEC §10).

Each test gets a fresh topic prefix, writes a clean history (dispatch commands, sent results,
telemetry, and the matching ``step_executions`` rows), injects one kind of violation into a
topic (or PostgreSQL), and runs the real ``dripdrop`` executable: exit 0 for the clean
history, exit 6 naming exactly the injected kind otherwise. The completeness check is also
run after a real worker's run, before and after rows are taken out of PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer
from psycopg.types.json import Jsonb
from sqlalchemy import Engine, text

from streams.api import DripDrop
from streams.codecs import Codecs
from streams.settings import Settings
from tests.integration._api_fixtures import api, db_engine, insert_enrollment, run_cli  # noqa: F401
from tests.integration.pipeline_support import build_outbound, enroll_many, start_worker
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

EXIT_VIOLATIONS = 6
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


@dataclass
class History:
    """One tenant's world in PostgreSQL plus helpers that write sends to the log and the DB."""

    settings: Settings
    engine: Engine
    tenant: str
    adapter_id: str
    override_id: str
    steps: list[str]
    enrollments: list[str]
    producer: Producer = field(init=False)
    codecs: Codecs = field(init=False)

    def __post_init__(self) -> None:
        self.producer = Producer(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "partitioner": "murmur2_random"}
        )
        self.codecs = Codecs(self.settings)

    def produce(self, topic: str, value: dict[str, Any], at: datetime) -> None:
        self.producer.produce(
            self.settings.topic(topic),
            key=self.tenant.encode(),
            value=self.codecs.for_topic(topic).encode(value),
            timestamp=int(at.timestamp() * 1000),
        )

    def send(
        self,
        enrollment: int,
        step: int,
        at: datetime,
        headers: dict[str, str],
        *,
        adapter_id: str | None = None,
        in_db: bool = True,
    ) -> str:
        """A granted, sent step execution: command, result, telemetry and its DB row."""
        exec_id = str(uuid.uuid4())
        adapter = adapter_id or self.adapter_id
        command = {
            "event_id": f"{exec_id}:1",
            "tenant_key": self.tenant,
            "step_execution_id": exec_id,
            "enrollment_id": self.enrollments[enrollment],
            "step_id": self.steps[step],
            "adapter_id": adapter,
            "channel": "email",
            "recipient": "prospect@example.com",
            "from_address": "rep@send.example",
            "subject": "Hello",
            "body_text": "Hi",
            "body_html": None,
            "headers": headers,
            "idempotency_key": exec_id,
            "attempt": 1,
            "decided_at": at,
        }
        self.produce("dispatch", command, at)
        self.result(exec_id, enrollment, at + timedelta(seconds=1), adapter_id=adapter)
        self.telemetry("dispatch.sent", at + timedelta(seconds=1), step_execution_id=exec_id)
        if in_db:
            self.row(exec_id, enrollment, step, at + timedelta(seconds=1), headers, adapter)
        return exec_id

    def result(
        self,
        exec_id: str,
        enrollment: int,
        at: datetime,
        *,
        adapter_id: str | None = None,
        attempt: int = 1,
        provider_id: str | None = None,
    ) -> None:
        self.produce(
            "dispatch-results",
            {
                "event_id": f"{exec_id}:{attempt}",
                "tenant_key": self.tenant,
                "step_execution_id": exec_id,
                "enrollment_id": self.enrollments[enrollment],
                "adapter_id": adapter_id or self.adapter_id,
                "attempt": attempt,
                "status": "sent",
                "provider_message_id": provider_id or f"prov-{exec_id}",
                "error": None,
                "finished_at": at,
            },
            at,
        )

    def telemetry(self, name: str, at: datetime, **attributes: Any) -> None:
        self.produce(
            "telemetry",
            {
                "event_id": str(uuid.uuid4()),
                "name": name,
                "tenant_key": self.tenant,
                "at": at,
                "attributes": json.dumps(attributes),
            },
            at,
        )

    def event(self, event_type: str, enrollment: int, at: datetime, **data: Any) -> None:
        self.produce(
            "message-events",
            {
                "id": str(uuid.uuid4()),
                "tenant_key": self.tenant,
                "enrollment_id": self.enrollments[enrollment],
                "step_execution_id": None,
                "adapter_id": self.adapter_id,
                "event_type": event_type,
                "provider_message_id": None,
                "in_reply_to": None,
                "references": [],
                "data": json.dumps(data),
                "occurred_at": at,
            },
            at,
        )

    def row(
        self,
        exec_id: str,
        enrollment: int,
        step: int,
        sent_at: datetime,
        headers: dict[str, str],
        adapter_id: str | None = None,
        *,
        attempt: int = 0,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dripdrop.step_executions (id, tenant_key, enrollment_id, step_id,"
                    " attempt, adapter_id, status, out_message_id, payload, sent_at)"
                    " VALUES (:id, :tenant, :enrollment, :step, :attempt, :adapter, 'sent',"
                    " :mid, :payload, :sent_at)"
                ),
                {
                    "id": exec_id,
                    "tenant": self.tenant,
                    "enrollment": self.enrollments[enrollment],
                    "step": self.steps[step],
                    "attempt": attempt,
                    "adapter": adapter_id or self.adapter_id,
                    "mid": headers["Message-ID"].strip("<>"),  # stored bare, as the sink does
                    "payload": Jsonb({"headers": headers}),
                    "sent_at": sent_at,
                },
            )

    def clean(self) -> None:
        """Enrollment 0: step 0, override step 1, step 2 threaded under step 0 (SPEC §5.6)."""
        m0, m1, m2 = (f"<{uuid.uuid4()}@send.example>" for _ in range(3))
        self.send(0, 0, T0, {"Message-ID": m0})
        self.send(0, 1, T0 + timedelta(minutes=2), {"Message-ID": m1}, adapter_id=self.override_id)
        self.send(
            0, 2, T0 + timedelta(minutes=4), {"Message-ID": m2, "In-Reply-To": m0, "References": m0}
        )
        self.telemetry("enrollment.completed", T0 + timedelta(minutes=5), enrollment_id="x")

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


@pytest.fixture
def history(
    settings: Settings,
    api: DripDrop,  # noqa: F811
    db_engine: Engine,  # noqa: F811
) -> Iterator[History]:
    tenant = f"acct_{uuid.uuid4().hex[:12]}"
    adapter = api.create_channel_adapter(
        tenant_key=tenant,
        name="rep",
        from_address="rep@send.example",
        health_state="active",
        daily_cap=3,
        min_gap_seconds=60,
    )
    override = api.create_channel_adapter(
        tenant_key=tenant, name="news", from_address="news@news.example", health_state="active"
    )
    pool = api.create_adapter_pool(tenant_key=tenant, name="sales")
    api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id)
    sequence = api.create_sequence(tenant_key=tenant, key="cold")
    version = api.create_sequence_version(
        sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    steps = [
        api.create_step(
            version.id,
            tenant_key=tenant,
            key=f"s{i}",
            position=i,
            adapter_override_id=override.id if i == 1 else None,
        ).id
        for i in range(3)
    ]
    enrollments = [
        insert_enrollment(
            db_engine,
            tenant_key=tenant,
            sequence_id=sequence.id,
            version_id=version.id,
            subscriber_id=f"lead-{i}",
            adapter_id=adapter.id,
        )
        for i in range(2)
    ]
    yield History(settings, db_engine, tenant, adapter.id, override.id, steps, enrollments)


def audit(settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(settings, "audit", "replay", "--json", *args)
    assert result.exit_code in (0, EXIT_VIOLATIONS), result.stderr
    return result.exit_code, json.loads(result.stdout)


def named(report: dict[str, Any]) -> set[str]:
    return {kind for kind, count in report["counts"].items() if count}


def test_audit_clean_history_exits_zero(settings: Settings, history: History) -> None:
    history.clean()
    history.flush()
    code, report = audit(settings, "--tenant", history.tenant)
    assert code == 0, report
    assert report["ok"] is True and report["sends"] == 3
    assert report["records"]["dispatch"] == 3 and report["records"]["telemetry"] == 4
    human = run_cli(settings, "audit", "replay")
    assert human.exit_code == 0, human.stderr
    assert "OK: no violation" in human.stdout
    events = run_cli(settings, "audit", "telemetry", "--name", "enrollment.completed")
    assert events.exit_code == 0, events.stderr
    (line,) = events.stdout.splitlines()
    assert json.loads(line)["attributes"] == {"enrollment_id": "x"}


def _over_cap(h: History) -> None:
    # Enrollment 1 sends twice more through the same adapter that day: 4 > cap 3.
    first, second = (f"<{uuid.uuid4()}@send.example>" for _ in range(2))
    h.send(1, 0, T0 + timedelta(minutes=6), {"Message-ID": first})
    h.send(
        1,
        2,
        T0 + timedelta(minutes=8),
        {"Message-ID": second, "In-Reply-To": first, "References": first},
    )


def _min_gap(h: History) -> None:
    h.send(1, 0, T0 + timedelta(seconds=30), {"Message-ID": f"<{uuid.uuid4()}@x>"})


def _sent_twice(h: History) -> None:
    exec_id = h.send(1, 0, T0 + timedelta(minutes=6), {"Message-ID": f"<{uuid.uuid4()}@x>"})
    h.result(exec_id, 1, T0 + timedelta(minutes=7), attempt=2, provider_id="second-delivery")


def _send_after_reply(h: History) -> None:
    h.telemetry("enrollment.replied", T0 + timedelta(minutes=3), enrollment_id=h.enrollments[0])


def _threading(h: History) -> None:
    # A sender change before step 2: step 2 must start a new chain, yet it replies to step 0.
    h.event("sender_reassigned", 0, T0 + timedelta(minutes=3), reason="repin")


def _db_missing_row(h: History) -> None:
    h.send(1, 0, T0 + timedelta(minutes=6), {"Message-ID": f"<{uuid.uuid4()}@x>"}, in_db=False)


def _db_extra_row(h: History) -> None:
    h.row(
        str(uuid.uuid4()),
        1,
        0,
        T0 + timedelta(minutes=6),
        {"Message-ID": f"<orphan-{uuid.uuid4()}@x>"},
    )


@pytest.mark.parametrize(
    ("inject", "kind"),
    [
        (_over_cap, "over_cap"),
        (_min_gap, "min_gap"),
        (_sent_twice, "sent_twice"),
        (_send_after_reply, "send_after_reply"),
        (_threading, "threading"),
        (_db_missing_row, "db_mismatch"),
        (_db_extra_row, "db_mismatch"),
    ],
    ids=[
        "over_cap",
        "min_gap",
        "sent_twice",
        "send_after_reply",
        "threading",
        "db_missing_row",
        "db_extra_row",
    ],
)
def test_audit_injected_violation_is_caught_and_named(
    settings: Settings, history: History, inject: Callable[[History], None], kind: str
) -> None:
    history.clean()
    inject(history)
    history.flush()
    code, report = audit(settings)
    assert code == EXIT_VIOLATIONS
    assert named(report) == {kind}, report["violations"]
    assert all(v["kind"] == kind for v in report["violations"])


def test_audit_time_range_reads_only_records_inside_it(
    settings: Settings, history: History
) -> None:
    history.clean()
    exec_id = history.send(
        1, 0, T0 + timedelta(minutes=30), {"Message-ID": f"<late-{uuid.uuid4()}@x>"}
    )
    history.result(exec_id, 1, T0 + timedelta(minutes=31), attempt=2, provider_id="again")
    history.flush()
    before = (T0 + timedelta(minutes=20)).isoformat()
    code, report = audit(settings, "--to", before)
    assert code == 0, report["violations"]
    assert report["records"]["dispatch"] == 3
    code, report = audit(settings, "--from", before)
    assert report["records"]["dispatch"] == 1 and report["records"]["dispatch-results"] == 2
    assert named(report) == {"sent_twice"} and code == EXIT_VIOLATIONS
    human = run_cli(settings, "audit", "replay", "--tenant", history.tenant)
    assert human.exit_code == EXIT_VIOLATIONS
    assert "VIOLATION [sent_twice]" in human.stdout and "FAILED: 1 violation(s)" in human.stdout


# ---------------------------------------------------------------- completeness


def _lost_step_no_row(h: History) -> None:
    # A granted send (its command is on dispatch) whose result failed: no ledger row.
    exec_id = str(uuid.uuid4())
    at = T0 + timedelta(minutes=6)
    h.produce(
        "dispatch",
        {
            "event_id": f"{exec_id}:1",
            "tenant_key": h.tenant,
            "step_execution_id": exec_id,
            "enrollment_id": h.enrollments[1],
            "step_id": h.steps[0],
            "adapter_id": h.adapter_id,
            "channel": "email",
            "recipient": "prospect@example.com",
            "from_address": "rep@send.example",
            "subject": "Hello",
            "body_text": "Hi",
            "body_html": None,
            "headers": {"Message-ID": f"<{exec_id}@send.example>"},
            "idempotency_key": exec_id,
            "attempt": 1,
            "decided_at": at,
        },
        at,
    )
    h.produce(
        "dispatch-results",
        {
            "event_id": f"{exec_id}:1",
            "tenant_key": h.tenant,
            "step_execution_id": exec_id,
            "enrollment_id": h.enrollments[1],
            "adapter_id": h.adapter_id,
            "attempt": 1,
            "status": "failed",
            "provider_message_id": None,
            "error": "550 user unknown",
            "finished_at": at + timedelta(seconds=1),
        },
        at + timedelta(seconds=1),
    )


def test_audit_decided_step_without_ledger_row_is_lost_step(
    settings: Settings, history: History
) -> None:
    history.clean()
    _lost_step_no_row(history)
    history.flush()
    code, report = audit(settings)
    assert code == EXIT_VIOLATIONS
    assert named(report) == {"lost_step"}, report["violations"]
    (violation,) = report["violations"]
    assert "a 'failed' result in the log but no row" in violation["message"]


def _enrollment_rows(engine: Engine, ids: list[str]) -> dict[str, str]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT id::text, state FROM dripdrop.enrollments WHERE id::text = ANY(:ids)"),
            {"ids": ids},
        )
        return {r[0]: r[1] for r in found}


def test_audit_completeness_after_a_real_run_then_injected_losses(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    db_engine: Engine,  # noqa: F811
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """A clean run passes; a deleted enrollment row and a completed row set back to
    active (what issue 11's crashes left behind) fail, named as such."""
    key = f"acct_{uuid.uuid4().hex[:12]}"
    world = build_outbound(client, smtp, tenant_key=key, steps=2)
    worker = start_worker(worker_factory)
    ids = enroll_many(client, world, key, 4)
    enroll_many(client, world, key, 1)  # a duplicate of the first: the same enrollment

    def completed() -> bool:
        assert worker.alive(), worker.log_tail()
        states = _enrollment_rows(db_engine, ids)
        return len(states) == 4 and set(states.values()) == {"completed"}

    wait_for(completed, timeout=90, what="4 enrollments completed")
    assert worker.stop() == 0, worker.log_tail()  # commits the processor's offsets

    code, report = audit(settings, "--tenant", key)
    assert code == 0, report["violations"]
    assert report["records"]["enrollments"] == 5 and report["sends"] == 8
    assert not any("not yet committed" in n for n in report["notes"]), report["notes"]

    lost, reopened = ids[1], ids[2]
    with db_engine.begin() as conn:  # the row and (cascade) its step executions
        conn.execute(text("DELETE FROM dripdrop.enrollments WHERE id = :id"), {"id": lost})
        conn.execute(
            text("UPDATE dripdrop.enrollments SET state = 'active' WHERE id = :id"),
            {"id": reopened},
        )
    code, report = audit(settings, "--tenant", key)
    assert code == EXIT_VIOLATIONS
    assert named(report) == {"lost_enrollment", "enrollment_state", "db_mismatch"}
    by_kind = {v["kind"]: v for v in report["violations"]}
    assert by_kind["lost_enrollment"]["enrollment_id"] == lost
    assert by_kind["enrollment_state"]["enrollment_id"] == reopened
    assert report["counts"]["lost_enrollment"] == 1 and report["counts"]["db_mismatch"] == 2
    human = run_cli(settings, "audit", "replay", "--tenant", key)
    assert human.exit_code == EXIT_VIOLATIONS
    assert "VIOLATION [lost_enrollment]" in human.stdout

"""The send ledger on real PostgreSQL and a real SMTP server: at most once per step execution."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from psycopg_pool import AsyncConnectionPool

from dripdrop_core.models import Adapter
from streams.providers import ProviderRegistry
from streams.sender import INTERRUPTED, BatchOutcome, Sender, SenderDatabaseError
from streams.settings import Settings
from tests.integration.ledger_rows import LedgerTenant
from tests.integration.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
Run = Callable[[Callable[[Sender], Awaitable[T]]], T]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(refuse={"nobody@example.test"}, drop_after_data={"drop@example.test"}) as s:
        yield s


@pytest.fixture
def tenant(services: Settings, sink: SmtpSink) -> LedgerTenant:
    return LedgerTenant(services.database_url, config=sink.adapter_config())


def run_with_sender(
    database_url: str,
    tenant: LedgerTenant,
    body: Callable[[Sender], Awaitable[T]],
    *,
    config: dict[str, Any] | None = None,
) -> T:
    """Run ``body(sender)`` in a fresh loop with its own pool and providers; clean up."""

    async def main() -> T:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url, min_size=1, max_size=4, open=False, timeout=5
        )
        await pool.open()
        registry = ProviderRegistry()
        with tenant.connect() as conn:
            row = conn.execute(
                "SELECT config FROM dripdrop.channel_adapters WHERE id = %s", (tenant.adapter_id,)
            ).fetchone()
        assert row is not None
        adapter = Adapter(
            id=tenant.adapter_id,
            tenant_key=tenant.tenant_key,
            name="mailbox-1",
            provider="smtp",
            config=config or row[0],
        )

        def lookup(adapter_id: str) -> Any:
            if adapter_id != adapter.id:
                raise KeyError(adapter_id)
            return registry.provider_for(adapter)

        try:
            return await body(Sender(pool, lookup))
        finally:
            await registry.close()
            await pool.close()

    return asyncio.run(main())


@pytest.fixture
def run(services: Settings, tenant: LedgerTenant) -> Run[Any]:
    def runner(body: Callable[[Sender], Awaitable[Any]]) -> Any:
        return run_with_sender(services.database_url, tenant, body)

    return runner


def test_deliver_one_command_stamps_headers_and_marks_sent(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[list[dict[str, Any]]]
) -> None:
    run_id = uuid.uuid4().hex  # out_message_id is unique across the whole database
    headers = {
        "Message-ID": f"<{run_id}-3@dripdrop.test>",
        "In-Reply-To": f"<{run_id}-2@dripdrop.test>",
        "References": f"<{run_id}-1@dripdrop.test> <{run_id}-2@dripdrop.test>",
    }
    command = tenant.command(headers=headers)

    results = run(lambda sender: sender.deliver_batch([command]))

    [received] = sink.messages
    assert {name: received.header(name) for name in headers} == headers
    [result] = results
    assert result["status"] == "sent"
    assert result["provider_message_id"] == received.queue_id
    assert result["event_id"] == command["event_id"]
    row = tenant.row(command["step_execution_id"])
    assert row["status"] == "sent"
    assert row["provider_message_id"] == received.queue_id
    assert row["sent_at"] is not None and row["error"] is None


def test_deliver_same_command_twice_sends_once(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[tuple[list[Any], BatchOutcome]]
) -> None:
    command = tenant.command()

    async def twice(sender: Sender) -> tuple[list[Any], BatchOutcome]:
        first = await sender.deliver_batch([command, command])  # duplicate within a batch too
        return first, await sender.deliver([command])

    first, second = run(twice)

    assert [r["status"] for r in first] == ["sent"]
    assert second.results == () and second.duplicates == (command["step_execution_id"],)
    assert len(sink.messages) == 1


def test_deliver_concurrently_from_two_senders_sends_once(
    services: Settings, tenant: LedgerTenant, sink: SmtpSink
) -> None:
    commands = tenant.commands(20)

    async def body(sender: Sender) -> list[list[dict[str, Any]]]:
        other = Sender(sender._pool, sender._providers)  # a second worker, own connection
        return list(
            await asyncio.gather(sender.deliver_batch(commands), other.deliver_batch(commands))
        )

    both = run_with_sender(services.database_url, tenant, body)

    reported = [r["step_execution_id"] for results in both for r in results]
    assert sorted(reported) == sorted(c["step_execution_id"] for c in commands)
    assert all(r["status"] == "sent" for results in both for r in results)
    assert len(sink.messages) == 20
    assert tenant.statuses() == {"sent": 20}


def test_deliver_row_left_sending_by_dead_worker_is_ambiguous_and_not_sent(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[list[dict[str, Any]]]
) -> None:
    command = tenant.command()
    tenant.set_status(command["step_execution_id"], "sending")  # claimed, then the worker died

    results = run(lambda sender: sender.deliver_batch([command]))

    assert [(r["status"], r["error"]) for r in results] == [("ambiguous", INTERRUPTED)]
    assert tenant.row(command["step_execution_id"])["status"] == "ambiguous"
    assert sink.messages == []


def test_deliver_row_being_sent_by_live_worker_is_left_alone(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[BatchOutcome]
) -> None:
    command = tenant.command()
    execution_id = command["step_execution_id"]
    with tenant.connect() as owner:  # a live worker mid-send: row 'sending' + its lock held
        owner.execute(
            "SELECT pg_advisory_lock(('x' || right(replace(%s::uuid::text, '-', ''), 16))"
            "::bit(64)::bigint)",
            (execution_id,),
        )
        tenant.set_status(execution_id, "sending")

        outcome = run(lambda sender: sender.deliver([command]))

    assert outcome.results == () and outcome.duplicates == (execution_id,)
    assert tenant.row(execution_id)["status"] == "sending"
    assert sink.messages == []


@pytest.mark.parametrize("state", ["replied", "stopped", "paused"])
def test_deliver_enrollment_no_longer_active_cancels_and_sends_nothing(
    state: str, tenant: LedgerTenant, sink: SmtpSink, run: Run[BatchOutcome]
) -> None:
    command = tenant.command()
    tenant.set_enrollment_state(command["enrollment_id"], state)  # reply committed first

    outcome = run(lambda sender: sender.deliver([command]))

    assert outcome.results == () and outcome.cancelled == (command["step_execution_id"],)
    row = tenant.row(command["step_execution_id"])
    assert (row["status"], row["error"]) == ("cancelled", f"enrollment_{state}")
    assert sink.messages == []


def test_deliver_refused_recipient_is_a_bounce(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[list[dict[str, Any]]]
) -> None:
    """550 at RCPT: a hard bounce (SPEC §7). The ledger keeps it failed, marked as a bounce,
    and a replayed command reports it as the bounce it was."""
    command = tenant.command(recipient="nobody@example.test")

    [result] = run(lambda sender: sender.deliver_batch([command]))

    assert result["status"] == "bounced"
    assert result["error"] == "recipient_refused: 550 5.1.1"
    row = tenant.row(command["step_execution_id"])
    assert (row["status"], row["error"], row["sent_at"]) == (
        "failed",
        f"bounced: {result['error']}",
        None,
    )
    id_ = command["step_execution_id"]
    [again] = run(lambda sender: sender.finished_results([command], [id_]))
    assert (again["status"], again["error"]) == ("bounced", f"bounced: {result['error']}")


def test_deliver_connection_dropped_after_data_marks_ambiguous(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[list[dict[str, Any]]]
) -> None:
    command = tenant.command(recipient="drop@example.test")

    [result] = run(lambda sender: sender.deliver_batch([command]))

    assert result["status"] == "ambiguous"
    assert result["error"].startswith("disconnected_after_data")
    assert tenant.row(command["step_execution_id"])["status"] == "ambiguous"
    assert len(sink.dropped) == 1 and sink.messages == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("subject", "Hi\r\nBcc: victim@example.test"), ("recipient", "a@example.test\nBcc: v@x")],
)
def test_deliver_header_injection_marks_failed_and_sends_nothing(
    field: str, value: str, tenant: LedgerTenant, sink: SmtpSink, run: Run[list[dict[str, Any]]]
) -> None:
    command = tenant.command(**{field: value})

    [result] = run(lambda sender: sender.deliver_batch([command]))

    assert (result["status"], result["error"]) == ("failed", f"header_injection: {field}")
    assert tenant.row(command["step_execution_id"])["status"] == "failed"
    assert sink.messages == [] and sink.dropped == []


def test_deliver_unreachable_server_is_deferred_never_a_failure(
    services: Settings, tenant: LedgerTenant
) -> None:
    """Nothing was handed over and nothing is wrong with the recipient: an adapter-level
    failure (SPEC §7), the row goes back to ``intent`` (the processor re-issues it later and
    counts it in the adapter's circuit breaker), the step is not failed."""
    command = tenant.command()
    config = {"host": "127.0.0.1", "port": free_port()}

    [result] = run_with_sender(
        services.database_url,
        tenant,
        lambda sender: sender.deliver_batch([command]),
        config=config,
    )

    assert result["status"] == "deferred"
    assert result["error"].startswith("connect_failed")
    assert result["event_id"] != command["event_id"]  # the final outcome keeps that one
    assert tenant.row(command["step_execution_id"])["status"] == "intent"


def test_deliver_unknown_adapter_and_unknown_row(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[BatchOutcome]
) -> None:
    unknown_adapter = tenant.command(adapter_id="00000000-0000-0000-0000-000000000000")
    no_row = {**tenant.command(), "step_execution_id": "0192c1a0-0000-7000-8000-000000000000"}
    bad_id = {**tenant.command(), "step_execution_id": "not-a-uuid"}

    outcome = run(lambda sender: sender.deliver([unknown_adapter, no_row, bad_id]))

    # An adapter the sender does not know yet (its config may be on the way) is deferred:
    # nothing is wrong with the message, so the step must not fail.
    [result] = outcome.results
    assert result["status"] == "deferred" and result["error"].startswith("adapter_unknown")
    assert tenant.row(unknown_adapter["step_execution_id"])["status"] == "intent"
    assert set(outcome.unknown) == {no_row["step_execution_id"], "not-a-uuid"}
    assert sink.messages == []


def test_deliver_database_unreachable_raises_sender_database_error(tenant: LedgerTenant) -> None:
    async def main() -> None:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            f"postgresql://dripdrop@127.0.0.1:{free_port()}/dripdrop",
            min_size=1,
            open=False,
            timeout=0.5,
        )
        await pool.open(wait=False)
        try:
            with pytest.raises(SenderDatabaseError):
                await Sender(pool, lambda _: pytest.fail("no send")).deliver_batch(
                    [tenant.command()]
                )
        finally:
            await pool.close()

    asyncio.run(main())


def test_deliver_200_commands_in_batches_sends_200(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[float]
) -> None:
    commands = tenant.commands(200)

    async def batches(sender: Sender) -> float:
        started = time.perf_counter()
        for start in range(0, len(commands), 50):
            results = await sender.deliver_batch(commands[start : start + 50])
            assert [r["status"] for r in results] == ["sent"] * 50
        return time.perf_counter() - started

    elapsed = run(batches)

    print(f"\nsender: 200 messages in {elapsed:.2f}s = {200 / elapsed:.0f} messages/s")
    assert len(sink.messages) == 200
    assert len({m.header("Message-ID") for m in sink.messages}) == 200
    assert tenant.statuses() == {"sent": 200}


def test_deliver_releases_its_advisory_locks_before_returning_the_connection(
    tenant: LedgerTenant, run: Run[int]
) -> None:
    async def body(sender: Sender) -> int:
        await sender.deliver_batch(tenant.commands(3))
        async with sender._pool.connection() as conn:  # min_size=1: the same connection
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    assert run(body) == 0


def test_deliver_never_touches_another_tenants_rows(
    services: Settings, tenant: LedgerTenant, sink: SmtpSink, run: Run[BatchOutcome]
) -> None:
    other = LedgerTenant(services.database_url, config=sink.adapter_config())
    waiting, stuck = other.commands(2)
    other.set_status(stuck["step_execution_id"], "sending")  # would look orphaned to its owner
    forged = [{**c, "tenant_key": tenant.tenant_key} for c in (waiting, stuck)]

    outcome = run(lambda sender: sender.deliver(forged))

    assert outcome.results == () and outcome.cancelled == () and outcome.duplicates == ()
    assert set(outcome.unknown) == {waiting["step_execution_id"], stuck["step_execution_id"]}
    assert other.row(waiting["step_execution_id"])["status"] == "intent"
    assert other.row(stuck["step_execution_id"])["status"] == "sending"
    assert sink.messages == []


def test_deliver_batch_claimed_in_several_chunks_keeps_every_rule(
    tenant: LedgerTenant, sink: SmtpSink, run: Run[BatchOutcome]
) -> None:
    # 50 commands: more than the first claim, so every kind of row lands in both claims.
    commands = tenant.commands(48)
    commands.insert(7, tenant.command(recipient="nobody@example.test"))  # refused: bounced
    commands.insert(30, tenant.command(recipient="drop@example.test"))  # dropped: ambiguous
    ids = [c["step_execution_id"] for c in commands]
    replied = [commands[3], commands[40]]
    finished = [commands[5], commands[45]]
    orphans = [commands[1], commands[47]]
    for command in replied:
        tenant.set_enrollment_state(command["enrollment_id"], "replied")
    for command in finished:
        tenant.set_status(command["step_execution_id"], "failed")
    for command in orphans:
        tenant.set_status(command["step_execution_id"], "sending")

    outcome = run(lambda sender: sender.deliver([*commands, commands[20], commands[44]]))

    by_status: dict[str, set[str]] = {}
    for result in outcome.results:
        by_status.setdefault(result["status"], set()).add(result["step_execution_id"])
    assert len(outcome.results) == len({r["step_execution_id"] for r in outcome.results})
    assert set(outcome.cancelled) == {c["step_execution_id"] for c in replied}
    assert set(outcome.duplicates) == {c["step_execution_id"] for c in finished}
    assert by_status["bounced"] == {ids[7]}
    assert by_status["ambiguous"] == {ids[30], *(c["step_execution_id"] for c in orphans)}
    assert len(by_status["sent"]) == 50 - 2 - 2 - 2 - 2
    assert len(sink.messages) == len(by_status["sent"])
    assert len({m.rcpt_tos for m in sink.messages}) == len(sink.messages)
    assert tenant.statuses() == {"sent": 42, "failed": 3, "ambiguous": 3, "cancelled": 2}


def test_deliver_losing_the_database_mid_batch_sends_nothing_twice(
    services: Settings, tenant: LedgerTenant, sink: SmtpSink
) -> None:
    commands = tenant.commands(40)
    calls: list[str] = []
    killed: list[int] = []

    def key_holder(step_execution_id: str) -> int:
        """The backend holding the row's advisory lock: the sender's connection."""
        with tenant.connect() as conn:
            row = conn.execute(
                "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1"
                " AND ((l.classid::bigint << 32) | l.objid::bigint)"
                " = ('x' || right(replace(%s::uuid::text, '-', ''), 16))::bit(64)::bigint",
                (step_execution_id,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    async def body(sender: Sender) -> tuple[SenderDatabaseError, list[dict[str, Any]]]:
        def lookup(adapter_id: str) -> Any:
            provider = sender._providers(adapter_id)

            class KillOnTwelfth:  # by then the first claim's sends are under way
                async def send(self, email: Any) -> str:
                    calls.append(email.recipient)
                    if len(calls) == 12:
                        [command] = [c for c in commands if c["recipient"] == email.recipient]
                        with tenant.connect() as conn:
                            pid = key_holder(command["step_execution_id"])
                            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        killed.append(pid)
                    return await provider.send(email)

            return KillOnTwelfth()

        with pytest.raises(SenderDatabaseError) as failed:
            await Sender(sender._pool, lookup).deliver(commands)
        retried = await sender.deliver_batch(commands)  # what the agent does next
        return failed.value, retried

    error, retried = run_with_sender(services.database_url, tenant, body)

    assert killed
    delivered = {m.rcpt_tos[0] for m in sink.messages}
    assert len(delivered) == len(sink.messages)  # nobody got an email twice
    assert error.results and {r["status"] for r in error.results} == {"sent"}
    assert {r["step_execution_id"] for r in error.results}.isdisjoint(
        r["step_execution_id"] for r in retried if r["status"] == "sent"
    )
    by_recipient = {c["step_execution_id"]: c["recipient"] for c in commands}
    rows = {c["step_execution_id"]: tenant.row(c["step_execution_id"]) for c in commands}
    assert {row["status"] for row in rows.values()} <= {"sent", "ambiguous"}
    for id_, row in rows.items():
        if row["status"] == "sent":
            assert by_recipient[id_] in delivered
        else:  # claimed before the failure, outcome never recorded: never sent again
            assert row["error"] == INTERRUPTED
    assert all(by_recipient[r["step_execution_id"]] in delivered for r in error.results)

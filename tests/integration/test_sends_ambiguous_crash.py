"""A worker SIGKILLed mid-batch leaves only the sends in flight ambiguous (issue 11).

200 dispatch commands of one tenant are one sender batch. The SMTP server takes 0.2 s in
``DATA``; once 24 messages are in and all eight sends of the batch are inside ``DATA`` at
once, it holds every one of them there and the test kills the worker: at that instant
exactly those eight rows are in the provider's hands. A second worker replays the batch
(its offsets were never committed). Before the fix the sender had claimed the whole batch
(``sending``) ahead of the sends, and some 180 rows that never reached the server became
``ambiguous``; now at most ``DEFAULT_CONCURRENCY`` rows are, each one whose hand-off had
started (the server saw its ``RCPT``), and every other row is sent exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller

from streams.codecs import Codecs
from streams.mailsink import RecordingHandler, SinkBehaviour, free_port
from streams.sender import DEFAULT_CONCURRENCY
from streams.settings import Settings
from tests.integration.ledger_rows import LedgerTenant
from tests.integration.robust_support import wait_ready
from tests.integration.support import WorkerProcess, producer, wait_for

COMMANDS = 200
DATA_SECONDS = 0.2
KILL_AFTER = 24


class HoldingHandler(RecordingHandler):
    """Records every ``RCPT`` (a hand-off that started); slow ``DATA``; then holds it.

    Once ``KILL_AFTER`` messages are accepted and ``DEFAULT_CONCURRENCY`` sessions are in
    ``DATA`` together, ``triggered`` is set and no session leaves ``DATA`` until
    ``released``: the test kills the worker in between, so what was in flight is known.
    """

    def __init__(self) -> None:
        super().__init__(SinkBehaviour())
        self.rcpts: set[str] = set()
        self.in_data = 0
        self.in_data_recipients: set[str] = set()
        self.triggered = threading.Event()
        self.released = threading.Event()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            self.rcpts.add(address)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        self.in_data += 1
        self.in_data_recipients.update(envelope.rcpt_tos)
        try:
            if self.in_data >= DEFAULT_CONCURRENCY and self.count >= KILL_AFTER:
                self.triggered.set()
            await asyncio.sleep(DATA_SECONDS)
            while self.triggered.is_set() and not self.released.is_set():
                await asyncio.sleep(0.02)
        finally:
            self.in_data -= 1
            if not self.triggered.is_set():
                self.in_data_recipients.difference_update(envelope.rcpt_tos)
        return await super().handle_DATA(server, session, envelope)


def publish(settings: Settings, commands: list[dict[str, Any]]) -> None:
    codec = Codecs(settings).for_topic("dispatch")
    out = producer(settings)
    for command in commands:
        out.produce(
            settings.topic("dispatch"),
            key=command["tenant_key"].encode(),
            value=codec.encode(command),
        )
    assert out.flush(30) == 0


def test_sigkill_mid_batch_leaves_only_the_sends_in_flight_ambiguous(
    settings: Settings,
    topics: Callable[..., list[str]],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics()
    handler = HoldingHandler()
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    try:
        config = {"host": "127.0.0.1", "port": port, "pool_size": DEFAULT_CONCURRENCY}
        ledger = LedgerTenant(settings.database_url, config=config)
        commands = ledger.commands(COMMANDS)
        recipient_of = {c["step_execution_id"]: c["recipient"] for c in commands}
        first = worker_factory(settings)
        wait_ready(first)
        publish(settings, commands)

        assert handler.triggered.wait(90), first.log_tail()
        first.kill()  # every send of the batch is inside DATA: exactly these are in flight
        in_flight = set(handler.in_data_recipients)
        handler.released.set()  # the server drops them: the client's connections are gone
        at_kill = handler.count
        assert at_kill < COMMANDS

        second = worker_factory(settings)

        def settled() -> dict[str, int] | None:
            assert second.alive(), second.log_tail()
            statuses = ledger.statuses()
            return statuses if set(statuses) <= {"sent", "ambiguous"} else None

        statuses = wait_for(settled, timeout=120, interval=0.5, what="every row settled")
        assert second.stop() == 0, second.log_tail()
    finally:
        handler.released.set()
        server.stop()

    with ledger.connect() as conn:
        ambiguous = [
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM dripdrop.step_executions"
                " WHERE tenant_key = %s AND status = 'ambiguous'",
                (ledger.tenant_key,),
            )
        ]
    assert 0 < len(ambiguous) <= DEFAULT_CONCURRENCY, statuses
    assert statuses == {"sent": COMMANDS - len(ambiguous), "ambiguous": len(ambiguous)}
    # Exactly the sends inside DATA at the kill: their hand-off had started (the server
    # saw their RCPT and their content), and only the server knows whether it kept them.
    ambiguous_recipients = {recipient_of[id_] for id_ in ambiguous}
    assert ambiguous_recipients == in_flight
    assert ambiguous_recipients <= handler.rcpts
    delivered = [m.rcpt_tos[0] for m in handler.messages]
    assert len(delivered) == len(set(delivered))  # nobody got a mail twice
    assert set(delivered) | ambiguous_recipients == set(recipient_of.values())  # none lost

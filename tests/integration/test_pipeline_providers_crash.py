"""A worker SIGKILLed while HTTP API sends are in flight: those are ambiguous, never resent.

The SMTP version is test_sends_ambiguous_crash.py; this one goes through an HTTP provider
(Mailgun's ``messages.mime`` via httpx, against the local Mailgun server). 120 dispatch
commands of one tenant; once 24 messages are accepted and all eight sends of the batch are
in the server's hands at once (their requests read whole), the server holds them and the
test SIGKILLs the worker. Those eight are exactly the sends whose request reached the API,
so only the API knows whether it kept them: a second worker on the same topics must mark
them ``ambiguous`` (the provider's ``timeout_after_request`` class, and the ledger's
``interrupted_while_sending``) and never send them again; every other row is sent exactly
once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from starlette.responses import JSONResponse, Response

from streams.sender import DEFAULT_CONCURRENCY
from streams.settings import Settings
from tests.integration.ledger_rows import LedgerTenant
from tests.integration.robust_support import wait_ready
from tests.integration.support import WorkerProcess, wait_for
from tests.integration.test_sends_ambiguous_crash import publish
from tests.providers.mailgun_api import MailgunApi

COMMANDS = 120
KILL_AFTER = 24


class HoldingMailgun(MailgunApi):
    """Mailgun that, past ``KILL_AFTER`` messages, holds eight requests read in full."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()  # every recipient whose request reached the server
        self.in_flight: set[str] = set()
        self.held: set[str] = set()  # the requests in flight when the kill was triggered
        self.triggered = threading.Event()
        self.released = threading.Event()

    async def planned(self, route: str = "send", tag: str | None = None) -> Response | None:
        assert tag is not None
        with self._lock:
            self.requests += 1
            self.seen.add(tag)
            self.in_flight.add(tag)
            if (
                not self.triggered.is_set()
                and len(self.in_flight) >= DEFAULT_CONCURRENCY
                and len(self.sent) >= KILL_AFTER
            ):
                self.held = set(self.in_flight)
                self.triggered.set()
        await asyncio.sleep(0.05)
        while self.triggered.is_set() and not self.released.is_set():
            await asyncio.sleep(0.02)
        with self._lock:
            held = self.triggered.is_set() and tag in self.held
            if not held:  # before the kill, or the next worker's sends after it: served
                self.in_flight.discard(tag)
                return None
        # Held through the kill: the client is gone; this server drops the message.
        return JSONResponse({"message": "client went away"}, 499)


def test_sigkill_with_http_sends_in_flight_leaves_exactly_those_ambiguous(
    settings: Settings,
    topics: Callable[..., list[str]],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    topics()
    server = HoldingMailgun()
    server.start()
    try:
        key_file = tmp_path / "mailgun-key"
        key_file.write_text(server.api_key)
        config = {
            "domain": "mg.example.com",
            "api_key": {"secret": f"file:{key_file}"},
            "api_base": server.url,
        }
        ledger = LedgerTenant(settings.database_url, provider="mailgun", config=config)
        commands = ledger.commands(COMMANDS)
        recipient_of = {c["step_execution_id"]: c["recipient"] for c in commands}
        first = worker_factory(settings)
        wait_ready(first)
        publish(settings, commands)

        assert server.triggered.wait(90), first.log_tail()
        first.kill()  # eight requests are in the API's hands: exactly these are in flight
        in_flight = set(server.held)
        server.released.set()

        second = worker_factory(settings)

        def settled() -> dict[str, int] | None:
            assert second.alive(), second.log_tail()
            statuses = ledger.statuses()
            return statuses if set(statuses) <= {"sent", "ambiguous"} else None

        try:
            statuses = wait_for(settled, timeout=120, interval=0.5, what="every row settled")
        except AssertionError:
            raise AssertionError(f"{ledger.statuses()} {second.log_tail()}") from None
        assert second.stop() == 0, second.log_tail()
    finally:
        server.released.set()
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
    assert len(in_flight) == DEFAULT_CONCURRENCY
    assert statuses == {"sent": COMMANDS - len(ambiguous), "ambiguous": len(ambiguous)}
    ambiguous_recipients = {recipient_of[id_] for id_ in ambiguous}
    assert ambiguous_recipients == in_flight  # exactly the requests the API had read
    delivered = [m.to for m in server.sent]
    assert len(delivered) == len(set(delivered))  # nobody got a message twice
    assert set(delivered) | ambiguous_recipients == set(recipient_of.values())  # none lost
    # A held request was never retried by the second worker: each recipient reached the
    # API once, whether it was then kept or dropped.
    assert server.requests == COMMANDS

"""A real SMTP server for tests, the demo and benchmarks: aiosmtpd on 127.0.0.1, free port.

It records every accepted message (envelope + parsed headers) and can misbehave on
request: refuse recipients with 550, or drop / stall the connection after DATA so the
client cannot know whether the message was accepted (an *ambiguous* outcome).

Run ``python -m streams.mailsink`` to serve in a process of its own (the
benchmark does, so the sink does not share the client's GIL); it prints the port.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the sink accepted (``headers``: unfolded values, first occurrence)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    headers: dict[str, str]
    message: EmailMessage
    queue_id: str
    peer: tuple[str, int]

    def header(self, name: str) -> str | None:
        """Header value by case-insensitive name."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class SinkBehaviour:
    """How the sink misbehaves; mutable between sends from the test's thread."""

    refuse: set[str] = field(default_factory=set)
    defer: dict[str, int] = field(default_factory=dict)
    """Recipient → how many more times RCPT answers ``451`` (greylisting) before ``250``."""
    drop_after_data: set[str] = field(default_factory=set)
    stall_after_data: set[str] = field(default_factory=set)
    stall_seconds: float = 5.0


class RecordingHandler:
    """aiosmtpd handler: RCPT policy, DATA recording, and the after-DATA failures."""

    def __init__(self, behaviour: SinkBehaviour) -> None:
        self.behaviour = behaviour
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._dropped: list[ReceivedMessage] = []
        self._ids = itertools.count(1)
        self.count = 0
        self.deferred: list[tuple[str, float]] = []
        """(recipient, monotonic time) of every RCPT answered 451."""

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.behaviour.refuse:
            return "550 5.1.1 Recipient address rejected: user unknown"
        with self._lock:
            left = self.behaviour.defer.get(address, 0)
            if left > 0:
                self.behaviour.defer[address] = left - 1
                self.deferred.append((address, time.monotonic()))
        if left > 0:
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        queue_id = f"Q{next(self._ids):08X}"
        received = _received(envelope, queue_id, session.peer)
        rcpts = set(envelope.rcpt_tos)
        if rcpts & self.behaviour.stall_after_data:
            with self._lock:
                self._dropped.append(received)
            await asyncio.sleep(self.behaviour.stall_seconds)
            return "451 4.3.0 too late"
        if rcpts & self.behaviour.drop_after_data:
            with self._lock:
                self._dropped.append(received)
            server.transport.abort()  # content read, no reply: the client cannot know
            return "250 OK"
        with self._lock:
            self._messages.append(received)
            self.count += 1
        return f"250 2.0.0 Ok: queued as {queue_id}"

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def dropped(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._dropped)


def _received(envelope: Any, queue_id: str, peer: Any) -> ReceivedMessage:
    raw: bytes = envelope.original_content or envelope.content
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    headers: dict[str, str] = {}
    for name, value in message.items():
        headers.setdefault(name, str(value))
    return ReceivedMessage(
        mail_from=envelope.mail_from,
        rcpt_tos=tuple(envelope.rcpt_tos),
        headers=headers,
        message=message,
        queue_id=queue_id,
        peer=(str(peer[0]), int(peer[1])),
    )


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd's Controller cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """A running aiosmtpd server in a background thread; use as a context manager.

    Args:
        refuse: recipients answered with ``550`` at RCPT.
        defer: recipients answered with ``451`` at RCPT that many times, then accepted.
        drop_after_data: recipients whose connection is aborted after the content arrived.
        stall_after_data: recipients whose final reply comes only after ``stall_seconds``.
        idle_timeout_seconds: the server closes connections idle this long (421).
    """

    def __init__(
        self,
        *,
        refuse: Iterable[str] = (),
        defer: dict[str, int] | None = None,
        drop_after_data: Iterable[str] = (),
        stall_after_data: Iterable[str] = (),
        stall_seconds: float = 5.0,
        idle_timeout_seconds: float = 300.0,
    ) -> None:
        self.behaviour = SinkBehaviour(
            refuse=set(refuse),
            defer=dict(defer or {}),
            drop_after_data=set(drop_after_data),
            stall_after_data=set(stall_after_data),
            stall_seconds=stall_seconds,
        )
        self.handler = RecordingHandler(self.behaviour)
        self.host = "127.0.0.1"
        self.port = free_port()
        self._timeout = idle_timeout_seconds
        self._controller = Controller(
            self.handler, hostname=self.host, port=self.port, timeout=idle_timeout_seconds
        )

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages so far (a copy)."""
        return self.handler.messages

    @property
    def dropped(self) -> list[ReceivedMessage]:
        """Messages whose connection was dropped or stalled after DATA."""
        return self.handler.dropped

    def adapter_config(self, **extra: Any) -> dict[str, Any]:
        """An SMTP adapter ``config`` pointing at this sink."""
        return {"host": self.host, "port": self.port, **extra}

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def restart(self) -> None:
        """Serve again on the same port after ``stop`` (an SMTP outage in the chaos harness);
        what was received before is kept."""
        self._controller = Controller(
            self.handler, hostname=self.host, port=self.port, timeout=self._timeout
        )
        self._controller.start()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """Serve until stdin closes; print the port first so a parent process can connect."""
    with SmtpSink() as sink:
        print(sink.port, flush=True)
        sys.stdin.read()
        print(sink.handler.count, flush=True)


if __name__ == "__main__":
    main()

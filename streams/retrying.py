"""Waiting out PostgreSQL: the one write-retry policy of the worker's stages.

An unreachable database is retried for as long as it lasts: nothing is committed
meanwhile, so nothing is lost. A write PostgreSQL refuses for good (bad rows) is raised at
once, for the caller to isolate and dead-letter. Whether trouble is transient is decided
in one place, by SQLSTATE (``streams.sink.is_transient``), through the ``__cause__``
chain the sink and the sender keep (``raise … from exc``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from streams.sink import SinkDatabaseError, is_transient

log = logging.getLogger("dripdrop.retrying")
T = TypeVar("T")

MAX_RETRY_SECONDS = 10.0
"""The longest wait between two tries (the back-off doubles from 0.4 s up to this)."""


class StopRetrying(BaseException):  # noqa: N818 - a signal, not an error
    """The worker is stopping while PostgreSQL is unreachable: abandon the input without
    committing it (the next owner replays it). A ``BaseException``, so no ``except
    Exception`` on the way turns it into a dead letter."""


def transient(exc: BaseException) -> bool:
    """Database trouble that goes away by itself (connection, pool, serialization)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SinkDatabaseError):
            return seen.transient
        if isinstance(seen, psycopg.Error):
            return is_transient(seen)
        seen = seen.__cause__
    return False


async def until_written(
    what: str, call: Callable[[], Awaitable[T]], *, stopping: Callable[[], bool]
) -> T:
    """``call()`` until it succeeds; transient database trouble is waited out.

    Raises:
        StopRetrying: the worker is stopping (``stopping()``) while the database is away.
        Exception: anything not transient, at once.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not transient(exc):
                raise
            if stopping():
                raise StopRetrying(what) from exc
            attempt += 1
            delay = min(0.2 * 2**attempt, MAX_RETRY_SECONDS)
            log.warning("%s failed (attempt %d, again in %.1f s): %s", what, attempt, delay, exc)
            await asyncio.sleep(delay)

"""The worker's write-retry policy (``streams.retrying.until_written``): an unreachable database
is waited out, a refused write is raised at once, a stopping worker abandons the input."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from streams import retrying
from streams.retrying import StopRetrying, until_written
from streams.retrying import transient as _transient
from streams.sink import SinkDatabaseError, is_transient


def wrapped(cause: BaseException, *, transient: bool | None = None) -> Exception:
    """An exception raised ``from cause``, as the sink and the sender raise theirs."""
    outer = SinkDatabaseError("x", transient=transient) if transient is not None else RuntimeError()
    outer.__cause__ = cause
    return outer


def test_transient_means_the_database_went_away_not_that_it_refused() -> None:
    assert _transient(SinkDatabaseError("down", transient=True))
    assert not _transient(SinkDatabaseError("check violation", transient=False))
    assert _transient(psycopg.OperationalError("connection refused"))
    assert _transient(wrapped(psycopg.OperationalError("server closed the connection")))
    assert not _transient(wrapped(psycopg.errors.CheckViolation("reason")))
    assert not _transient(KeyError("op"))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        # psycopg files these under OperationalError, but the rows are at fault
        (psycopg.errors.ProgramLimitExceeded, False),  # an index row too large
        (psycopg.errors.StringDataRightTruncation, False),
        (psycopg.errors.CheckViolation, False),
        # and these elsewhere, though they heal by themselves
        (psycopg.errors.ReadOnlySqlTransaction, True),  # a failover (InternalError)
        (psycopg.errors.UndefinedTable, True),  # a migration not applied yet
        (psycopg.errors.AdminShutdown, True),
        (psycopg.errors.SerializationFailure, True),
        (psycopg.errors.TooManyConnections, True),
    ],
)
def test_transient_is_decided_by_sqlstate(error: type[psycopg.Error], transient: bool) -> None:
    assert is_transient(error("x")) is transient
    assert _transient(wrapped(error("x"))) is transient


def run(calls: list[BaseException | str], *, stopping: bool = False) -> tuple[Any, int]:
    attempts = 0

    async def call() -> str:
        nonlocal attempts
        outcome = calls[attempts]
        attempts += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    result = asyncio.run(until_written("write", call, stopping=lambda: stopping))
    return result, attempts


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrying, "MAX_RETRY_SECONDS", 0.0)


def test_an_unreachable_database_is_retried_until_the_write_succeeds() -> None:
    down = SinkDatabaseError("down", transient=True)
    assert run([down, down, down, "written"]) == ("written", 4)


def test_a_refused_write_is_raised_without_retrying() -> None:
    refused = SinkDatabaseError("check violation", transient=False)
    with pytest.raises(SinkDatabaseError):
        run([refused, "never"])


def test_a_stopping_worker_abandons_the_input_instead_of_dead_lettering_it() -> None:
    down = SinkDatabaseError("down", transient=True)
    with pytest.raises(StopRetrying) as info:
        run([down, "never"], stopping=True)
    assert not isinstance(info.value, Exception)  # no ``except Exception`` swallows it

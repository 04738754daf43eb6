"""The ledger's SQL: claim, orphan and cancel rows, record outcomes, read finished rows, all
in one round trip per transaction on the batch's connection (which owns the advisory locks)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from streams.sender._outcome import Command, _Delivery

# The package's logger, named as before the split so log filters and handlers still match.
log = logging.getLogger("streams.sender")

# 64 random bits of the uuid (uuid7's leading bits are a timestamp, shared within a ms).
_LOCK_KEY = "('x' || right(replace({0}::text, '-', ''), 16))::bit(64)::bigint"

_LOCK_ROWS = """
SELECT id::text, tenant_key, status
FROM dripdrop.step_executions
WHERE id = ANY(%s::uuid[])
ORDER BY id
FOR UPDATE
"""

# The command's (id, tenant_key) pairs: a row of another tenant never matches, so it is never
# touched and its id is reported unknown.
_COMMANDS = "unnest(%s::uuid[], %s::text[]) AS c(id, tenant_key)"

# A row in ``sending`` whose advisory lock is free belonged to a worker that is gone. The
# try-lock never waits, so it cannot deadlock with a claimer; it is only tried on this
# tenant's ``sending`` rows (CASE fixes the evaluation order) and held until commit.
_MARK_ORPHANED = f"""
UPDATE dripdrop.step_executions AS se
SET status = 'ambiguous', error = %s, updated_at = now()
FROM {_COMMANDS}
WHERE se.id = c.id
  AND CASE WHEN se.status = 'sending' AND se.tenant_key = c.tenant_key
      THEN pg_try_advisory_xact_lock({_LOCK_KEY.format("se.id")}) ELSE false END
RETURNING se.id::text
"""

# Claim and take the session advisory lock of every claimed row, in one statement.
_CLAIM = f"""
UPDATE dripdrop.step_executions AS se
SET status = 'sending', updated_at = now()
FROM {_COMMANDS}
WHERE se.id = c.id AND se.tenant_key = c.tenant_key
  AND se.status = 'intent'
  AND NOT EXISTS (
    SELECT 1 FROM dripdrop.enrollments e
    WHERE e.id = se.enrollment_id AND e.state <> 'active'
  )
RETURNING se.id::text, pg_advisory_lock({_LOCK_KEY.format("se.id")})
"""

# After _CLAIM: the rows still ``intent`` are exactly those it did not claim.
_CANCEL = f"""
UPDATE dripdrop.step_executions AS se
SET status = 'cancelled', error = 'enrollment_' || e.state, updated_at = now()
FROM {_COMMANDS}, dripdrop.enrollments e
WHERE se.id = c.id AND se.tenant_key = c.tenant_key
  AND se.status = 'intent'
  AND e.tenant_key = se.tenant_key AND e.id = se.enrollment_id
  AND e.state <> 'active'
RETURNING se.id::text
"""

_UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"

_RECORD = """
UPDATE dripdrop.step_executions AS se
SET status = CASE WHEN v.status IN ('retry', 'deferred') THEN 'intent'
                  WHEN v.status = 'bounced' THEN 'failed' ELSE v.status END,
    provider_message_id = v.provider_message_id,
    -- The ledger keeps a bounce as failed; the prefix lets a replayed command report it
    -- as the bounce it was (_FINISHED).
    error = CASE WHEN v.status = 'bounced' THEN 'bounced: ' || v.error ELSE v.error END,
    sent_at = CASE WHEN v.status = 'sent' THEN v.finished_at ELSE se.sent_at END,
    updated_at = now()
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
  AS v(id, status, provider_message_id, error, finished_at)
WHERE se.id = v.id AND se.status = 'sending'
"""

_FINISHED = """
SELECT id::text, tenant_key,
       CASE WHEN status = 'failed' AND error LIKE 'bounced: %%' THEN 'bounced' ELSE status END,
       provider_message_id, error, coalesce(sent_at, updated_at)
FROM dripdrop.step_executions
WHERE id = ANY(%s::uuid[]) AND status IN ('sent', 'failed', 'ambiguous')
"""

INTERRUPTED = "interrupted_while_sending"
"""``error`` of a row found in ``sending`` with no live owner (its worker crashed)."""


@dataclass(frozen=True, slots=True)
class _Claim:
    claimed: tuple[str, ...]
    orphaned: tuple[str, ...]
    cancelled: tuple[str, ...]
    duplicates: tuple[str, ...]
    unknown: tuple[str, ...]


async def _claim(
    conn: AsyncConnection[Any],
    by_id: Mapping[str, Command],
    *,
    outcomes: Mapping[str, _Delivery] | None = None,
    then: str | None = None,
) -> _Claim:
    """One transaction in one round trip: record ``outcomes``, then lock the rows of
    ``by_id``, mark orphans, claim, cancel; ``then`` runs after the commit."""
    ids = list(by_id)
    tenants = [_tenant_key(by_id[id_]) for id_ in ids]
    statements: list[tuple[str, Sequence[Any]]] = []
    if outcomes:
        statements.append(_record_statement(outcomes))
    if ids:
        statements += [
            (_LOCK_ROWS, (ids,)),
            (_MARK_ORPHANED, (INTERRUPTED, ids, tenants)),
            (_CLAIM, (ids, tenants)),
            (_CANCEL, (ids, tenants)),
        ]
    replies = await _atomically(conn, *statements, then=then)
    if not ids:
        return _Claim((), (), (), (), ())
    locked, orphans, claims, cancels = replies[-4:]
    intent: list[str] = []
    sending: list[str] = []
    finished: list[str] = []
    found: set[str] = set()
    for id_, tenant_key, status in locked:  # each row as it was when locked
        if tenant_key != by_id[id_]["tenant_key"]:
            continue  # another tenant's row: treat as unknown (no statement touched it)
        found.add(id_)
        {"intent": intent, "sending": sending}.get(status, finished).append(id_)
    unknown = tuple(id_ for id_ in by_id if id_ not in found)
    claimed = [row[0] for row in claims]
    orphaned = {row[0] for row in orphans}
    cancelled = [row[0] for row in cancels]
    in_flight = [id_ for id_ in sending if id_ not in orphaned]
    # An intent row neither claimed nor cancelled: its enrollment changed between the two
    # statements (e.g. paused → active). Nothing was done; a later command may send it.
    done = {*claimed, *cancelled}
    skipped = [id_ for id_ in intent if id_ not in done]
    if unknown:
        log.warning("dispatch commands without a ledger row: %s", ", ".join(unknown))
    return _Claim(
        claimed=tuple(claimed),
        orphaned=tuple(id_ for id_ in sending if id_ in orphaned),
        cancelled=tuple(cancelled),
        duplicates=tuple(finished + in_flight + skipped),
        unknown=unknown,
    )


async def _fetch(conn: AsyncConnection[Any], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql, params)
    return list(await cursor.fetchall())


async def _atomically(
    conn: AsyncConnection[Any], *statements: tuple[str, Sequence[Any]], then: str | None = None
) -> list[list[tuple[Any, ...]]]:
    """Run ``BEGIN; statements; COMMIT`` (then ``then``, outside it) in one round trip.

    The connection is in autocommit mode (``deliver`` sets it), so psycopg adds no implicit
    ``BEGIN`` with a sync of its own, and pipeline mode sends everything before reading any
    reply. Semantics are those of one ordinary transaction: statements run in order, a
    failing one aborts the rest and nothing commits (rolled back here, then re-raised).

    Returns:
        The rows of each statement (empty for one without ``RETURNING``).
    """
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            cursors = [await conn.execute(sql, params) for sql, params in statements]
            await conn.execute("COMMIT")
            if then is not None:
                await conn.execute(then)
    except psycopg.Error:
        await _rollback(conn)
        raise
    return [list(await c.fetchall()) if c.description else [] for c in cursors]


async def _rollback(conn: AsyncConnection[Any]) -> None:
    """Leave an aborted explicit transaction; a connection that cannot is closed."""
    if conn.closed or conn.broken or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        await conn.execute("ROLLBACK")
    except psycopg.Error:
        await conn.close()


def _record_statement(outcomes: Mapping[str, _Delivery]) -> tuple[str, Sequence[Any]]:
    """All outcomes in one statement; only rows still ``sending`` change."""
    deliveries = list(outcomes.values())
    return (
        _RECORD,
        (
            list(outcomes),
            [d.status for d in deliveries],
            [d.provider_message_id for d in deliveries],
            [d.error for d in deliveries],
            [d.finished_at for d in deliveries],
        ),
    )


async def _release_locks(conn: AsyncConnection[Any]) -> None:
    """Drop this session's advisory locks before the connection goes back to the pool.

    On a broken connection there is nothing to release: the server ended the session.
    """
    if conn.closed or conn.broken:
        return
    try:
        await _rollback(conn)
        await conn.execute(_UNLOCK_ALL)
        await conn.commit()  # a no-op in autocommit mode
    except psycopg.Error:
        log.warning("could not release advisory locks; the connection will be discarded")
        await conn.close()


async def _restore_autocommit(conn: AsyncConnection[Any], autocommit: bool) -> None:
    """Give the connection back to the pool as it came; one that cannot be reset is closed."""
    if conn.closed or conn.broken:
        return
    try:
        await conn.set_autocommit(autocommit)
    except psycopg.Error:
        await conn.close()


def _tenant_key(command: Command) -> str | None:
    """The command's tenant as a SQL parameter; anything but a string matches no row."""
    tenant_key = command.get("tenant_key")
    return tenant_key if isinstance(tenant_key, str) else None

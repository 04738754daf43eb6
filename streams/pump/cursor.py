"""The pump's cursor in PostgreSQL: per (adapter, folder) UIDVALIDITY + last UID, and the
Message-IDs already produced (so a UIDVALIDITY resync produces nothing twice).

Saved only after Kafka acknowledged the records (``ImapFolderPump.sync``): a crash in
between re-reads the same UIDs on restart, and the processor's (tenant, message id)
dedupe absorbs the second copy. Both tables are written in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import ConnectionPool

SEEN_RETENTION_DAYS = 60
"""How long a produced Message-ID is remembered: longer than any resync window."""


@dataclass(frozen=True, slots=True)
class Cursor:
    uidvalidity: int
    last_uid: int
    updated_at: datetime


class CursorStore:
    """Blocking (psycopg); the pump calls it through ``asyncio.to_thread``."""

    def __init__(self, database_url: str) -> None:
        self.pool = ConnectionPool(database_url, min_size=1, max_size=4, open=True)

    def close(self) -> None:
        self.pool.close()

    def load(self, adapter_id: str, folder: str) -> Cursor | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT uidvalidity, last_uid, updated_at FROM dripdrop.inbound_cursors"
                " WHERE adapter_id = %s AND folder = %s",
                (adapter_id, folder),
            ).fetchone()
        return Cursor(int(row[0]), int(row[1]), row[2]) if row else None

    def save(
        self,
        adapter_id: str,
        tenant_key: str,
        folder: str,
        uidvalidity: int,
        last_uid: int,
        seen: Iterable[tuple[str, int]] = (),
    ) -> None:
        """Move the cursor and remember the produced ids (``(message_id, uid)``), at once.

        A cursor never moves back within one UIDVALIDITY (two pumps on one mailbox, or a
        late save after a restart, cannot rewind it).
        """
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO dripdrop.inbound_cursors AS c (tenant_key, adapter_id, folder,"
                " uidvalidity, last_uid) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (adapter_id, folder) DO UPDATE"
                " SET uidvalidity = EXCLUDED.uidvalidity, updated_at = now(),"
                " last_uid = CASE WHEN c.uidvalidity = EXCLUDED.uidvalidity"
                " THEN greatest(c.last_uid, EXCLUDED.last_uid) ELSE EXCLUDED.last_uid END",
                (tenant_key, adapter_id, folder, uidvalidity, last_uid),
            )
            rows = [(tenant_key, adapter_id, folder, mid, uid) for mid, uid in seen]
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO dripdrop.inbound_seen (tenant_key, adapter_id, folder,"
                        " message_id, uid) VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (adapter_id, message_id)"
                        " DO UPDATE SET seen_at = now()",
                        rows,
                    )

    def seen(self, adapter_id: str, message_ids: Iterable[str]) -> set[str]:
        """Which of these ids this adapter's pump already produced."""
        ids = list(message_ids)
        if not ids:
            return set()
        with self.pool.connection() as conn:
            found = conn.execute(
                "SELECT message_id FROM dripdrop.inbound_seen"
                " WHERE adapter_id = %s AND message_id = ANY(%s)",
                (adapter_id, ids),
            ).fetchall()
        return {str(r[0]) for r in found}

    def prune(self) -> int:
        with self.pool.connection() as conn:
            cur = conn.execute(
                "DELETE FROM dripdrop.inbound_seen"
                " WHERE seen_at < now() - make_interval(days => %s)",
                (SEEN_RETENTION_DAYS,),
            )
            return cur.rowcount

    def inbound_adapters(self) -> list[tuple[str, str, dict[str, object]]]:
        """``(adapter_id, tenant_key, config)`` of active adapters with an inbound part."""
        with self.pool.connection() as conn:
            found = conn.execute(
                "SELECT id::text, tenant_key, config FROM dripdrop.channel_adapters"
                " WHERE active AND config ? 'inbound' ORDER BY id"
            ).fetchall()
        return [(str(r[0]), str(r[1]), dict(r[2])) for r in found]


@dataclass(frozen=True, slots=True)
class ApiCursor:
    """A Gmail or Graph pump's state: the read cursor and the push registration."""

    cursor: str | None
    watch_id: str | None
    watch_expires_at: datetime | None
    updated_at: datetime


class ApiCursorStore:
    """``dripdrop.inbound_api_cursors`` (kind ``gmail``: the historyId; ``graph``: the delta
    link) next to ``inbound_seen`` (folder = the kind). Shares the ``CursorStore``'s pool."""

    def __init__(self, store: CursorStore, kind: str) -> None:
        self.store = store
        self.kind = kind

    def load(self, adapter_id: str) -> ApiCursor | None:
        with self.store.pool.connection() as conn:
            row = conn.execute(
                "SELECT cursor, watch_id, watch_expires_at, updated_at"
                " FROM dripdrop.inbound_api_cursors WHERE adapter_id = %s AND kind = %s",
                (adapter_id, self.kind),
            ).fetchone()
        return ApiCursor(row[0], row[1], row[2], row[3]) if row else None

    def save(
        self,
        adapter_id: str,
        tenant_key: str,
        cursor: str | None,
        seen: Iterable[str] = (),
    ) -> None:
        """Move the cursor (``None``: keep it) and remember the produced ids, at once."""
        with self.store.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO dripdrop.inbound_api_cursors AS c (tenant_key, adapter_id, kind,"
                " cursor) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (adapter_id, kind) DO UPDATE"
                " SET cursor = coalesce(EXCLUDED.cursor, c.cursor), updated_at = now()",
                (tenant_key, adapter_id, self.kind, cursor),
            )
            rows = [(tenant_key, adapter_id, self.kind, mid, 0) for mid in seen]
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO dripdrop.inbound_seen (tenant_key, adapter_id, folder,"
                        " message_id, uid) VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (adapter_id, message_id)"
                        " DO UPDATE SET seen_at = now()",
                        rows,
                    )

    def save_watch(
        self, adapter_id: str, tenant_key: str, watch_id: str | None, expires_at: datetime | None
    ) -> None:
        """Record the push registration (Gmail watch, Graph subscription); the cursor stays."""
        with self.store.pool.connection() as conn:
            conn.execute(
                "INSERT INTO dripdrop.inbound_api_cursors AS c (tenant_key, adapter_id, kind,"
                " watch_id, watch_expires_at) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (adapter_id, kind) DO UPDATE"
                " SET watch_id = EXCLUDED.watch_id,"
                " watch_expires_at = EXCLUDED.watch_expires_at",
                (tenant_key, adapter_id, self.kind, watch_id, expires_at),
            )

    def seen(self, adapter_id: str, message_ids: Iterable[str]) -> set[str]:
        return self.store.seen(adapter_id, message_ids)

"""Which adapter a webhook URL names: ``WebhookAdapter`` and its PostgreSQL lookup.

The only database access of the receiver lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.webhooks._errors import UnavailableError


@dataclass(frozen=True, slots=True)
class WebhookAdapter:
    id: str
    tenant_key: str
    provider: str
    config: Mapping[str, Any]


AdapterStore = Callable[[str, str], Awaitable[WebhookAdapter | None]]
"""``(tenant_key, adapter_id)`` → the adapter, or None when it is not that tenant's."""


class PostgresAdapters:
    """Adapters read from ``dripdrop.channel_adapters`` per request (blocking psycopg in a
    thread, a small pool opened on first use)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pool: Any = None

    def _lookup(self, tenant_key: str, adapter_id: str) -> WebhookAdapter | None:
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - the receiver's only DB use

        if self._pool is None:
            self._pool = ConnectionPool(self.database_url, min_size=1, max_size=4, open=True)
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT id::text, tenant_key, provider, config FROM dripdrop.channel_adapters"
                " WHERE id = %s AND tenant_key = %s",
                (adapter_id, tenant_key),
            ).fetchone()
        if row is None:
            return None
        return WebhookAdapter(str(row[0]), str(row[1]), str(row[2]), dict(row[3] or {}))

    async def __call__(self, tenant_key: str, adapter_id: str) -> WebhookAdapter | None:
        try:
            return await asyncio.to_thread(self._lookup, tenant_key, adapter_id)
        except Exception as exc:  # noqa: BLE001 - psycopg's errors: answered 503
            raise UnavailableError(f"PostgreSQL: {type(exc).__name__}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

"""Diagnostic ping job: a record on ``{prefix}ping`` becomes a row in ``dripdrop_diag.pings``.

It proves the whole plumbing (producer → broker → Faust worker → PostgreSQL) on a real
deployment without touching product state; ``tests/integration/test_plumbing.py`` drives it.
"""

from __future__ import annotations

import json
from typing import Any

import faust
import psycopg

from streams.settings import Settings

DDL = """
CREATE SCHEMA IF NOT EXISTS dripdrop_diag;
CREATE TABLE IF NOT EXISTS dripdrop_diag.pings (
    ping_id text PRIMARY KEY,
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""


def register(app: faust.App, settings: Settings) -> None:
    """Declare the ping topic and its agent on ``app``."""
    topic = app.topic(settings.topic("ping"), key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {}

    async def connection() -> psycopg.AsyncConnection[Any]:
        conn = state.get("conn")
        if conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
            await conn.execute(DDL)
            state["conn"] = conn
        return conn

    @app.agent(topic, name="ping")
    async def ping(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            body = json.loads(event.value)
            conn = await connection()
            await conn.execute(
                'INSERT INTO dripdrop_diag.pings (ping_id, topic, partition, "offset", body)'
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (ping_id) DO NOTHING",
                (
                    body["ping_id"],
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                    json.dumps(body),
                ),
            )

"""Helpers of the Gmail and Graph pump tests: an adapter whose inbound side is a mailbox of
the local Gmail / Graph server (tests/providers), a pump with its push endpoint, and the
rows the tests read."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.api import DripDrop
from streams.pump.localrun import PumpProcess
from streams.settings import Settings
from tests.integration.pipeline_support import TopicReader, rows, telemetry_named
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import wait_for
from tests.providers.gmail_api import GmailApi
from tests.providers.graph_api import GraphApi


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiPumps:
    """Starts ``dripdrop pump`` processes, each with its push endpoint on a free port."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.started: list[PumpProcess] = []
        self.port = free_port()

    def start(self, adapter_id: str, env: dict[str, str] | None = None) -> PumpProcess:
        pump = PumpProcess(
            self.settings,
            self.tmp_path / f"pump-{len(self.started)}.log",
            args=(
                "--refresh-seconds",
                "0.5",
                "--adapter",
                adapter_id,
                "--http-port",
                str(self.port),
            ),  # fmt: skip
            env=env,
        )
        self.started.append(pump)
        return pump

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def secret_file(tmp_path: Path, value: str) -> dict[str, str]:
    path = tmp_path / f"secret-{uuid.uuid4().hex[:8]}"
    path.write_text(value + "\n")
    return {"secret": f"file:{path}"}


def gmail_inbound(
    server: GmailApi, tmp_path: Path, push_token: str, **extra: Any
) -> dict[str, Any]:
    """``config.inbound.gmail`` for the local Gmail server, watch on, polling rare."""
    return {
        "gmail": {
            "client_id": server.tokens.client_id,
            "client_secret": secret_file(tmp_path, server.tokens.client_secret),
            "refresh_token": secret_file(tmp_path, server.tokens.refresh_token),
            "token_url": server.token_url,
            "api_base": server.url,
            "topic_name": "projects/dripdrop-test/topics/gmail-inbound",
            "push_token": secret_file(tmp_path, push_token),
            "poll_seconds": 3600,
            **extra,
        }
    }


def graph_inbound(
    server: GraphApi, tmp_path: Path, notification_url: str, client_state: str, **extra: Any
) -> dict[str, Any]:
    """``config.inbound.graph`` for the local Graph server, subscription on, polling rare."""
    return {
        "graph": {
            "tenant": server.tenant,
            "client_id": server.tokens.client_id,
            "client_secret": secret_file(tmp_path, server.tokens.client_secret),
            "refresh_token": secret_file(tmp_path, server.tokens.refresh_token),
            "token_url": server.token_url,
            "api_base": server.api_base,
            "notification_url": notification_url,
            "client_state": secret_file(tmp_path, client_state),
            "poll_seconds": 3600,
            **extra,
        }
    }


def build_api_mailbox(
    dd: DripDrop, smtp: SmtpSink, *, tenant_key: str, inbound: Callable[[str], dict[str, Any]]
) -> tuple[Any, dict[str, Any]]:
    """An adapter sending into ``smtp`` whose inbound side is ``inbound(adapter_id)`` (the
    push URL names the adapter, so the config is set once the id is known), with a
    two-step sequence (the second an hour later)."""
    address = f"sales-{uuid.uuid4().hex[:10]}@dripdrop.test"
    adapter = dd.create_channel_adapter(
        tenant_key=tenant_key,
        name="sales",
        provider="smtp",
        from_address=address,
        health_state="active",
        config=smtp.adapter_config(),
    )
    adapter = dd.update_channel_adapter(
        adapter.id,
        tenant_key=tenant_key,
        config={**smtp.adapter_config(), "inbound": inbound(adapter.id)},
    )
    pool = dd.create_adapter_pool(tenant_key=tenant_key, name="sales")
    dd.add_pool_member(pool.id, tenant_key=tenant_key, adapter_id=adapter.id, weight=1)
    sequence = dd.create_sequence(tenant_key=tenant_key, key="cold")
    version = dd.create_sequence_version(
        sequence.id, tenant_key=tenant_key, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    for i in range(2):
        dd.create_step(
            version.id,
            tenant_key=tenant_key,
            key=f"s{i}",
            position=i,
            subject_template="Hello {{ first_name }}" if i == 0 else "Re: Hello",
            body_template=f"Step {i}",
            delay_seconds=(0, 3600)[i],
        )
    return adapter, {"sequence": sequence, "pool": pool, "address": address}


def api_cursor(settings: Settings, adapter_id: str, kind: str) -> tuple[Any, ...] | None:
    found = rows(
        settings,
        "SELECT cursor, watch_id, watch_expires_at, tenant_key FROM dripdrop.inbound_api_cursors"
        " WHERE adapter_id = %s AND kind = %s",
        adapter_id,
        kind,
    )
    return found[0] if found else None


def inbound_of(reader: TopicReader, adapter_id: str) -> list[dict[str, Any]]:
    return [r for r in reader.poll() if r["adapter_id"] == adapter_id]


def at_least(reader: TopicReader, adapter_id: str, n: int, what: str) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        got = inbound_of(reader, adapter_id)  # the reader keeps every record it read
        return got if len(got) >= n else None

    return wait_for(enough, what=what)


def registered(telemetry: TopicReader, adapter_id: str, count: int = 1) -> list[dict[str, Any]]:
    return telemetry.wait(
        telemetry_named("pump.push_registered", adapter_id=adapter_id),
        count=count,
        timeout=60,
        what=f"push registered x{count}",
    )


def connected(telemetry: TopicReader, adapter_id: str) -> list[dict[str, Any]]:
    return telemetry.wait(
        telemetry_named("pump.connected", adapter_id=adapter_id), timeout=60, what="pump up"
    )

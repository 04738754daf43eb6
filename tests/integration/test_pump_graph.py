"""``dripdrop pump`` with ``config.inbound.graph`` against the local Microsoft Graph server
(tests/providers/graph_api.py: subscriptions with the validation request, change and
lifecycle notifications, delta queries, ``$value``), real Kafka and PostgreSQL.

* End to end: the subscription is created through the validation handshake (the pump's
  endpoint echoes the token); a reply delivered into the Inbox is notified, read by a
  delta round and its ``$value``, produced; the enrollment is ``replied``; the delta link
  cursor is saved. A forged ``clientState`` is refused (403) and wakes nothing.
* Lifecycle: ``missed`` → a delta round finds the unnotified message;
  ``reauthorizationRequired`` → PATCH renewal; ``subscriptionRemoved`` → a new
  subscription; a stored expiration near its end → renewal.
* A delta link Graph refuses (410) resyncs without duplicates; an expired token (401)
  is refreshed once.
* SIGKILL between Kafka's acknowledgement and the cursor save: read again, effect once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams import crashpoints
from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    enrollment_state,
    rows,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.pump_api_support import (
    ApiPumps,
    api_cursor,
    at_least,
    build_api_mailbox,
    connected,
    graph_inbound,
    inbound_of,
    registered,
)
from tests.integration.pump_support import reply
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for
from tests.providers.graph_api import GraphApi

STATE = "client-state-0123456789abcdef"
SEQUENCES: dict[str, str] = {}


@pytest.fixture
def graph() -> Iterator[GraphApi]:
    with GraphApi() as server:
        yield server


@pytest.fixture
def api_pumps(settings: Settings, tmp_path: Path) -> Iterator[ApiPumps]:
    pumps = ApiPumps(settings, tmp_path)
    yield pumps
    for pump in pumps.started:
        pump.stop()


def _mailbox(
    client: DripDrop, smtp: SmtpSink, graph: GraphApi, pumps: ApiPumps, tmp: Path, key: str
) -> Any:
    adapter, world = build_api_mailbox(
        client,
        smtp,
        tenant_key=key,
        inbound=lambda adapter_id: graph_inbound(
            graph, tmp, pumps.url(f"/graph/notify/{adapter_id}"), STATE
        ),
    )
    SEQUENCES[key] = world["sequence"].id
    return adapter


def _enroll(client: DripDrop, key: str) -> str:
    return str(
        client.enroll(
            tenant_key=key,
            sequence_id=SEQUENCES[key],
            subscriber_id="p-1",
            recipient="prospect@prospects.test",
            data={"first_name": "Ada"},
        ).enrollment_id
    )


def _first_send(settings: Settings, enrollment_id: str) -> str:
    found = wait_for(
        lambda: rows(
            settings,
            "SELECT out_message_id FROM dripdrop.step_executions"
            " WHERE enrollment_id = %s AND status = 'sent'",
            enrollment_id,
        ),
        what="first send",
    )
    return str(found[0][0])


def _cursor_is_delta_link(settings: Settings, adapter_id: str) -> tuple[Any, ...]:
    def saved() -> tuple[Any, ...] | None:
        found = api_cursor(settings, adapter_id, "graph")
        return found if found is not None and "$deltatoken=" in str(found[0]) else None

    return wait_for(saved, what="delta link cursor")


def test_graph_notification_reply_stops_enrollment_end_to_end(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    graph: GraphApi,
    api_pumps: ApiPumps,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, graph, api_pumps, tmp_path, key)
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")
    pump = api_pumps.start(adapter.id)
    connected(telemetry, adapter.id)
    created = attrs_of(registered(telemetry, adapter.id)[0])
    # Graph created it only after the pump's endpoint echoed the validation token.
    assert created["how"] == "created" and graph.subscription_posts == 1
    (subscription,) = graph.subscriptions.values()
    assert subscription.resource == "me/mailFolders('Inbox')/messages"
    assert subscription.client_state == STATE
    echo = httpx.post(api_pumps.url(f"/graph/notify/{adapter.id}?validationToken=a%2Bb%20c"))
    assert (echo.status_code, echo.text) == (200, "a+b c")
    assert echo.headers["content-type"].startswith("text/plain")

    enrollment = _enroll(client, key)
    out_id = _first_send(settings, enrollment)
    message_id, raw = reply("sales@contoso.test", out_id)
    graph.deliver(raw)
    assert graph.notification_answers == [202]

    def replied() -> tuple[Any, ...] | None:
        assert pump.alive(), pump.log_tail()
        state = enrollment_state(settings, enrollment)
        return state if state is not None and state[0] == "replied" else None

    assert wait_for(replied, what="enrollment replied")[0] == "replied"
    ingested = telemetry.wait(telemetry_named("ingest.inbound_message", message_id=message_id))
    assert attrs_of(ingested[0])["intent"] == "reply"
    cursor = _cursor_is_delta_link(settings, adapter.id)
    assert cursor[1] == subscription.id and cursor[3] == key
    assert cursor[2] > datetime.now(UTC) + timedelta(days=6)

    # A forged notification (wrong clientState) is refused and starts no delta round.
    deltas = graph.delta_calls
    forged = {"value": [{"subscriptionId": subscription.id, "clientState": "guess",
                         "changeType": "created", "resource": "Users/x/Messages/y"}]}  # fmt: skip
    answer = httpx.post(api_pumps.url(f"/graph/notify/{adapter.id}"), json=forged)
    assert answer.status_code == 403
    no_state = {"value": [{"subscriptionId": subscription.id, "changeType": "created"}]}
    assert (
        httpx.post(api_pumps.url(f"/graph/notify/{adapter.id}"), json=no_state).status_code == 403
    )
    assert graph.delta_calls == deltas
    assert pump.stop() == 0, pump.log_tail()
    assert worker.stop() == 0, worker.log_tail()
    assert "clientState" in pump.log_text()
    for secret in (STATE, graph.tokens.refresh_token, graph.tokens.client_secret):
        assert secret not in pump.log_text()
    telemetry.close()


def test_graph_lifecycle_missed_reauthorize_removed_and_renewal(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    graph: GraphApi,
    api_pumps: ApiPumps,
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, graph, api_pumps, tmp_path, key)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    pump = api_pumps.start(adapter.id)
    registered(telemetry, adapter.id)
    (subscription_id,) = graph.subscriptions

    # A notification Graph could not deliver: the message is there, nobody was told.
    missed_id, raw = reply("sales@contoso.test", "<m1@send.example>")
    graph.deliver(raw, notify=False)
    assert graph.lifecycle(subscription_id, "missed") == 202
    got = at_least(inbound, adapter.id, 1, "the missed message, by delta")
    assert [r["message_id"] for r in got] == [missed_id]

    assert graph.lifecycle(subscription_id, "reauthorizationRequired") == 202
    renewed = attrs_of(registered(telemetry, adapter.id, count=2)[-1])
    assert renewed["how"] == "renewed" and renewed["subscription_id"] == subscription_id
    assert graph.subscription_patches == 1

    # The stored expiration is an hour away (six days later): the next round renews.
    rows(
        settings,
        "UPDATE dripdrop.inbound_api_cursors SET watch_expires_at = now() + interval '1 hour'"
        " WHERE adapter_id = %s AND kind = 'graph' RETURNING 1",
        adapter.id,
    )
    graph.deliver(reply("sales@contoso.test", "<m2@send.example>")[1])
    registered(telemetry, adapter.id, count=3)
    assert graph.subscription_patches == 2
    found = api_cursor(settings, adapter.id, "graph")
    assert found is not None and found[2] > datetime.now(UTC) + timedelta(days=6)

    assert graph.lifecycle(subscription_id, "subscriptionRemoved") == 202
    recreated = attrs_of(registered(telemetry, adapter.id, count=4)[-1])
    assert recreated["how"] == "created" and recreated["subscription_id"] != subscription_id
    assert graph.subscription_posts == 2 and list(graph.subscriptions) == [
        recreated["subscription_id"]
    ]
    got = at_least(inbound, adapter.id, 2, "the second")
    assert len(got) == 2
    assert pump.stop() == 0, pump.log_tail()
    telemetry.close()
    inbound.close()


def test_graph_refused_delta_link_resyncs_without_duplicates(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    graph: GraphApi,
    api_pumps: ApiPumps,
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, graph, api_pumps, tmp_path, key)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    pump = api_pumps.start(adapter.id)
    registered(telemetry, adapter.id)
    messages = [reply("sales@contoso.test", f"<s{i}@send.example>") for i in range(3)]
    graph.deliver(messages[0][1])
    at_least(inbound, adapter.id, 1, "the first")

    graph.expire_delta_tokens()  # the stored delta link is refused: 410 Gone
    graph.deliver(messages[1][1])
    reset = telemetry.wait(telemetry_named("pump.cursor_reset", adapter_id=adapter.id))
    assert attrs_of(reset[0])["reason"] == "delta_link_refused"
    at_least(inbound, adapter.id, 2, "the second, through the resync")

    graph.tokens.expire_all()
    grants = graph.tokens.grants
    graph.deliver(messages[2][1])
    got = at_least(inbound, adapter.id, 3, "the third")
    assert [r["message_id"] for r in got] == [m for m, _ in messages]
    assert graph.tokens.grants == grants + 1
    assert pump.stop() == 0, pump.log_tail()
    assert len(inbound_of(inbound, adapter.id)) == 3
    telemetry.close()
    inbound.close()


def test_graph_pump_killed_between_ack_and_cursor_save_ingests_once(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    graph: GraphApi,
    api_pumps: ApiPumps,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, graph, api_pumps, tmp_path, key)
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    enrollment = _enroll(client, key)
    out_id = _first_send(settings, enrollment)
    message_id, raw = reply("sales@contoso.test", out_id)

    first = api_pumps.start(adapter.id, env={crashpoints.ENV: "pump.before_cursor_save:1"})
    registered(telemetry, adapter.id)
    before = _cursor_is_delta_link(settings, adapter.id)
    graph.deliver(raw)
    wait_for(lambda: not first.alive(), timeout=60, what="the crash before the cursor save")
    assert "crash point pump.before_cursor_save" in first.log_text(), first.log_tail()
    acked = at_least(inbound, adapter.id, 1, "the acknowledged record")
    assert [r["message_id"] for r in acked] == [message_id]
    assert api_cursor(settings, adapter.id, "graph")[0] == before[0]  # type: ignore[index]

    second = api_pumps.start(adapter.id)  # its stored subscription is kept
    copies = at_least(inbound, adapter.id, 2, "the message read again")
    assert [r["message_id"] for r in copies] == [message_id, message_id]  # at least once

    def moved() -> bool:
        found = api_cursor(settings, adapter.id, "graph")
        return found is not None and found[0] != before[0]

    wait_for(moved, what="cursor saved")
    telemetry.wait(telemetry_named("ingest.duplicate", message_id=message_id))
    effects = [r for r in telemetry.poll() if r["name"] == "ingest.inbound_message"]
    assert [attrs_of(r)["message_id"] for r in effects] == [message_id]  # effect once
    state = enrollment_state(settings, enrollment)
    assert state is not None and state[0] == "replied"
    assert second.stop() == 0, second.log_tail()
    assert worker.stop() == 0, worker.log_tail()
    telemetry.close()
    inbound.close()

"""``dripdrop pump`` with ``config.inbound.gmail`` against the local Gmail API server
(tests/providers/gmail_api.py: history, watch, Pub/Sub-style pushes), real Kafka and
PostgreSQL, and a worker where the effect matters.

* End to end: a step sent by the pipeline; a reply delivered into the Gmail mailbox; the
  watch's push wakes the pump, which reads ``history.list``, fetches the raw message,
  produces it; the enrollment is ``replied``; the historyId cursor is saved.
* A stale historyId (404) resyncs the recent window without producing anything twice; an
  expired access token (401) is refreshed once.
* The watch is renewed when its expiration comes near.
* SIGKILL between Kafka's acknowledgement and the cursor save: read again, effect once.
* Push authentication: the token in the URL, the OIDC bearer; forgeries get 403.
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
    gmail_inbound,
    inbound_of,
    registered,
)
from tests.integration.pump_support import reply
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for
from tests.providers.gmail_api import GmailApi, PushOidc

TOKEN = "push-token-0123456789abcdef"
SEQUENCES: dict[str, str] = {}


@pytest.fixture
def gmail() -> Iterator[GmailApi]:
    with GmailApi() as server:
        yield server


@pytest.fixture
def api_pumps(settings: Settings, tmp_path: Path) -> Iterator[ApiPumps]:
    pumps = ApiPumps(settings, tmp_path)
    yield pumps
    for pump in pumps.started:
        pump.stop()


def _mailbox(
    client: DripDrop, smtp: SmtpSink, gmail: GmailApi, pumps: ApiPumps, tmp: Path, key: str,
    **extra: Any,
) -> Any:  # fmt: skip
    adapter, world = build_api_mailbox(
        client, smtp, tenant_key=key, inbound=lambda _id: gmail_inbound(gmail, tmp, TOKEN, **extra)
    )
    gmail.push_endpoint = pumps.url(f"/gmail/push/{adapter.id}?token={TOKEN}")
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


def test_gmail_push_reply_stops_enrollment_end_to_end(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    gmail: GmailApi,
    api_pumps: ApiPumps,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, gmail, api_pumps, tmp_path, key)
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")
    pump = api_pumps.start(adapter.id)
    connected(telemetry, adapter.id)
    watch = attrs_of(registered(telemetry, adapter.id)[0])
    assert gmail.watch_calls == 1 and watch["kind"] == "gmail"
    enrollment = _enroll(client, key)
    out_id = _first_send(settings, enrollment)

    message_id, raw = reply("sales@gmail.test", out_id)
    gmail.deliver(raw)
    assert gmail.push_answers == [204]  # Pub/Sub's push was acknowledged

    def replied() -> tuple[Any, ...] | None:
        assert pump.alive(), pump.log_tail()
        state = enrollment_state(settings, enrollment)
        return state if state is not None and state[0] == "replied" else None

    assert wait_for(replied, what="enrollment replied")[0] == "replied"
    ingested = telemetry.wait(telemetry_named("ingest.inbound_message", message_id=message_id))
    assert attrs_of(ingested[0])["intent"] == "reply"
    assert rows(
        settings, "SELECT count(*) FROM dripdrop.step_executions WHERE enrollment_id = %s",
        enrollment,
    ) == [(1,)]  # fmt: skip
    cursor = wait_for(
        lambda: (
            found
            if (found := api_cursor(settings, adapter.id, "gmail")) is not None
            and found[0] == str(gmail.history_id)
            else None
        ),
        what="historyId cursor saved",
    )
    assert cursor[1] == "projects/dripdrop-test/topics/gmail-inbound" and cursor[3] == key
    assert cursor[2] > datetime.now(UTC) + timedelta(days=6)  # the watch's 7-day expiration
    assert gmail.history_calls >= 2  # the first round on start, then the push's
    assert pump.stop() == 0, pump.log_tail()
    assert worker.stop() == 0, worker.log_tail()
    for secret in (TOKEN, gmail.tokens.refresh_token, gmail.tokens.client_secret):
        assert secret not in pump.log_text()
    telemetry.close()


def test_gmail_stale_history_id_resyncs_without_duplicates(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    gmail: GmailApi,
    api_pumps: ApiPumps,
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, gmail, api_pumps, tmp_path, key)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    pump = api_pumps.start(adapter.id)
    connected(telemetry, adapter.id)
    messages = [reply("sales@gmail.test", f"<s{i}@send.example>") for i in range(3)]
    gmail.deliver(messages[0][1])
    at_least(inbound, adapter.id, 1, "the first")

    gmail.expire_history()  # the stored historyId is now older than Google's history
    gmail.deliver(messages[1][1])
    reset = telemetry.wait(telemetry_named("pump.cursor_reset", adapter_id=adapter.id))
    assert attrs_of(reset[0])["reason"] == "history_id_expired"
    at_least(inbound, adapter.id, 2, "the second, through the resync")

    gmail.tokens.expire_all()  # the pump's access token is refused: one refresh, go on
    grants = gmail.tokens.grants
    gmail.deliver(messages[2][1])
    got = at_least(inbound, adapter.id, 3, "the third")
    # Records of one tenant share a partition: a copy of the first would be read by now.
    assert [r["message_id"] for r in got] == [m for m, _ in messages]
    assert gmail.tokens.grants == grants + 1
    assert {r["intent"] for r in got} == {"reply"}
    assert pump.stop() == 0, pump.log_tail()
    assert api_cursor(settings, adapter.id, "gmail")[0] == str(gmail.history_id)  # type: ignore[index]
    telemetry.close()
    inbound.close()


def test_gmail_watch_renewed_before_it_expires(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    gmail: GmailApi,
    api_pumps: ApiPumps,
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, gmail, api_pumps, tmp_path, key)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    pump = api_pumps.start(adapter.id)
    registered(telemetry, adapter.id)
    first = api_cursor(settings, adapter.id, "gmail")
    assert first is not None and gmail.watch_calls == 1
    # Six days later, as far as the stored expiration goes: one hour left.
    rows(
        settings,
        "UPDATE dripdrop.inbound_api_cursors SET watch_expires_at = now() + interval '1 hour'"
        " WHERE adapter_id = %s AND kind = 'gmail' RETURNING 1",
        adapter.id,
    )
    gmail.deliver(reply("sales@gmail.test", "<x@send.example>")[1])  # a push: a round
    registered(telemetry, adapter.id, count=2)
    assert gmail.watch_calls == 2
    renewed = api_cursor(settings, adapter.id, "gmail")
    assert renewed is not None and renewed[2] > datetime.now(UTC) + timedelta(days=6)
    at_least(inbound, adapter.id, 1, "the message of the round")
    assert pump.stop() == 0, pump.log_tail()
    telemetry.close()
    inbound.close()


def test_gmail_pump_killed_between_ack_and_cursor_save_ingests_once(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    gmail: GmailApi,
    api_pumps: ApiPumps,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    key = tenant()
    adapter = _mailbox(client, smtp, gmail, api_pumps, tmp_path, key)
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    enrollment = _enroll(client, key)
    out_id = _first_send(settings, enrollment)
    message_id, raw = reply("sales@gmail.test", out_id)

    first = api_pumps.start(adapter.id, env={crashpoints.ENV: "pump.before_cursor_save:1"})
    connected(telemetry, adapter.id)
    before = api_cursor(settings, adapter.id, "gmail")
    assert before is not None
    gmail.deliver(raw)
    wait_for(lambda: not first.alive(), timeout=60, what="the crash before the cursor save")
    assert "crash point pump.before_cursor_save" in first.log_text(), first.log_tail()
    acked = at_least(inbound, adapter.id, 1, "the acknowledged record")
    assert [r["message_id"] for r in acked] == [message_id]
    assert api_cursor(settings, adapter.id, "gmail")[0] == before[0]  # type: ignore[index]

    second = api_pumps.start(adapter.id)
    copies = at_least(inbound, adapter.id, 2, "the message read again")
    assert [r["message_id"] for r in copies] == [message_id, message_id]  # at least once
    wait_for(
        lambda: api_cursor(settings, adapter.id, "gmail")[0] == str(gmail.history_id),  # type: ignore[index]
        what="cursor saved",
    )
    telemetry.wait(telemetry_named("ingest.duplicate", message_id=message_id))
    effects = [r for r in telemetry.poll() if r["name"] == "ingest.inbound_message"]
    assert [attrs_of(r)["message_id"] for r in effects] == [message_id]  # effect once
    state = enrollment_state(settings, enrollment)
    assert state is not None and state[0] == "replied"
    assert second.stop() == 0, second.log_tail()
    assert worker.stop() == 0, worker.log_tail()
    telemetry.close()
    inbound.close()


def test_gmail_push_authentication_token_and_oidc(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    gmail: GmailApi,
    api_pumps: ApiPumps,
    tmp_path: Path,
) -> None:
    key = tenant()
    account = "gmail-push@dripdrop-test.iam.gserviceaccount.com"
    audience = "https://pump.example.com/gmail/push"
    gmail.push_oidc = PushOidc(service_account=account, audience=audience)
    oidc = {
        "audience": audience,
        "service_account": account,
        "certs_url": f"{gmail.url}/oauth2/v3/certs",
    }
    adapter = _mailbox(client, smtp, gmail, api_pumps, tmp_path, key, push_oidc=oidc)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    pump = api_pumps.start(adapter.id)
    connected(telemetry, adapter.id)
    message_id, raw = reply("sales@gmail.test", "<y@send.example>")
    gmail.deliver(raw)  # the right token in the URL and a valid OIDC bearer
    assert gmail.push_answers == [204]
    assert [r["message_id"] for r in at_least(inbound, adapter.id, 1, "pushed")] == [message_id]

    envelope = {"message": {"data": "eyJoaXN0b3J5SWQiOiAxfQ==", "messageId": "1"}}
    url = api_pumps.url(f"/gmail/push/{adapter.id}")
    good = {"Authorization": f"Bearer {gmail.oidc_token()}"}
    forged = [
        (f"{url}?token=wrong", good),
        (url, good),  # no token at all
        (f"{url}?token={TOKEN}", {}),  # no OIDC bearer
        (f"{url}?token={TOKEN}", {"Authorization": f"Bearer {gmail.oidc_token(aud='x')}"}),
        (f"{url}?token={TOKEN}", {"Authorization": f"Bearer {gmail.oidc_token(exp=1)}"}),
        (
            f"{url}?token={TOKEN}",
            {"Authorization": f"Bearer {gmail.oidc_token(email='evil@example.com')}"},
        ),
    ]
    other = PushOidc(service_account=account, audience=audience, kid=gmail.push_oidc.kid)
    real, gmail.push_oidc = gmail.push_oidc, other  # a token signed by another key
    forged.append((f"{url}?token={TOKEN}", {"Authorization": f"Bearer {gmail.oidc_token()}"}))
    gmail.push_oidc = real
    for target, headers in forged:
        assert httpx.post(target, json=envelope, headers=headers).status_code == 403
    assert httpx.post(f"{url}?token={TOKEN}", content=b"{", headers=good).status_code == 400
    assert httpx.post(api_pumps.url("/gmail/push/unknown"), json=envelope).status_code == 404
    assert len(inbound_of(inbound, adapter.id)) == 1
    assert pump.stop() == 0, pump.log_tail()
    assert pump.log_text().count("refused") >= len(forged)
    telemetry.close()
    inbound.close()

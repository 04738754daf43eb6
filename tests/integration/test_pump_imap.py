"""``dripdrop pump`` against the real Dovecot (helper A's services), Kafka and PostgreSQL.

* End to end: a step sent by the pipeline; a reply delivered into the sender's mailbox
  (LMTP, as Postfix delivers); the pump, waiting in IDLE, ingests it; the enrollment is
  ``replied`` and no later step is sent. No password in any log.
* SIGKILL between Kafka's acknowledgement and the cursor save: the restarted pump reads
  the message again; it takes effect once (dedupe) and is never lost.
* The server drops the pump's connection: it reconnects by itself, and mail that came
  meanwhile is ingested.
* UIDVALIDITY changes (the folder is recreated): the pump resyncs, produces nothing it
  already produced, and picks up what is new.
* Steps sent through Postfix, one to an unknown user: Postfix's own RFC 3464 report lands
  in the sender's mailbox, the pump ingests it as a hard bounce: the recipient is
  suppressed, the enrollment ``bounced``, and one bounce in twenty sends breaches the
  mailbox's 2 % bounce rate.
"""

from __future__ import annotations

import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams import crashpoints
from streams.api import DripDrop
from streams.pump.localrun import PumpProcess
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
from tests.integration.pump_support import (
    Mailbox,
    build_mailbox,
    imap_session,
    reply,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

DOVECOT_CONF = (
    Path(__file__).resolve().parents[2] / ".dripdrop" / "mail" / "dovecot" / "dovecot.conf"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _connected(telemetry: TopicReader, mailbox: Mailbox, count: int = 1) -> list[dict[str, Any]]:
    return telemetry.wait(
        telemetry_named("pump.connected", adapter_id=mailbox.adapter.id),
        count=count,
        timeout=60,
        what=f"pump connected x{count}",
    )


def _inbound(reader: TopicReader, mailbox: Mailbox) -> list[dict[str, Any]]:
    return [r for r in reader.poll() if r["adapter_id"] == mailbox.adapter.id]


def _at_least(reader: TopicReader, mailbox: Mailbox, n: int, what: str) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        got = _inbound(reader, mailbox)
        return got if len(got) >= n else None

    return wait_for(enough, what=what)


def _enroll(client: DripDrop, mailbox: Mailbox, key: str) -> str:
    return str(
        client.enroll(
            tenant_key=key,
            sequence_id=mailbox.world["sequence"].id,
            subscriber_id="p-1",
            recipient="prospect@prospects.test",
            data={"first_name": "Ada"},
        ).enrollment_id
    )


def test_pump_idle_reply_stops_enrollment_end_to_end(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    mail_server: Any,
    worker_factory: Callable[..., WorkerProcess],
    pump_factory: Callable[..., PumpProcess],
) -> None:
    key = tenant()
    mailbox = build_mailbox(client, smtp, mail_server, tenant_key=key)
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")
    pump = pump_factory("--adapter", mailbox.adapter.id)
    connected = _connected(telemetry, mailbox)[0]
    assert attrs_of(connected)["idle"] is True  # Dovecot offers IDLE: no polling
    enrollment = _enroll(client, mailbox, key)
    out_id = _first_send(settings, enrollment)

    message_id, raw = reply(mailbox.address, out_id)
    mail_server.deliver(raw, mailbox.address)

    def replied() -> tuple[Any, ...] | None:
        assert pump.alive(), pump.log_tail()
        state = enrollment_state(settings, enrollment)
        return state if state is not None and state[0] == "replied" else None

    assert wait_for(replied, what="enrollment replied")[0] == "replied"
    ingested = telemetry.wait(telemetry_named("ingest.inbound_message", message_id=message_id))
    assert attrs_of(ingested[0])["intent"] == "reply"
    sends = rows(
        settings,
        "SELECT count(*) FROM dripdrop.step_executions WHERE enrollment_id = %s",
        enrollment,
    )
    assert sends == [(1,)]  # the second step was cancelled, never issued
    cursor = rows(
        settings,
        "SELECT last_uid, tenant_key FROM dripdrop.inbound_cursors WHERE adapter_id = %s",
        mailbox.adapter.id,
    )
    assert cursor == [(1, key)]
    assert pump.stop() == 0, pump.log_tail()
    assert worker.stop() == 0, worker.log_tail()
    for log in (pump.log_text(), worker.log_path.read_text(errors="replace")):
        assert mailbox.password not in log
    telemetry.close()


def test_pump_killed_between_ack_and_cursor_save_ingests_once_never_loses(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    mail_server: Any,
    worker_factory: Callable[..., WorkerProcess],
    pump_factory: Callable[..., PumpProcess],
) -> None:
    key = tenant()
    mailbox = build_mailbox(client, smtp, mail_server, tenant_key=key)
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    enrollment = _enroll(client, mailbox, key)
    out_id = _first_send(settings, enrollment)
    message_id, raw = reply(mailbox.address, out_id)

    first = pump_factory(
        "--adapter", mailbox.adapter.id, env={crashpoints.ENV: "pump.before_cursor_save:1"}
    )
    _connected(telemetry, mailbox)
    mail_server.deliver(raw, mailbox.address)
    wait_for(lambda: not first.alive(), timeout=60, what="the crash before the cursor save")
    assert "crash point pump.before_cursor_save" in first.log_text(), first.log_tail()
    # Kafka holds the record; the cursor does not know it.
    acked = _at_least(inbound, mailbox, 1, "the acknowledged record")
    assert [r["message_id"] for r in acked] == [message_id]
    assert rows(
        settings,
        "SELECT last_uid FROM dripdrop.inbound_cursors WHERE adapter_id = %s",
        mailbox.adapter.id,
    ) == [(0,)]

    second = pump_factory("--adapter", mailbox.adapter.id)
    copies = _at_least(inbound, mailbox, 2, "the message read again")
    assert [r["message_id"] for r in copies] == [message_id, message_id]  # at least once
    wait_for(
        lambda: (
            rows(
                settings,
                "SELECT last_uid FROM dripdrop.inbound_cursors WHERE adapter_id = %s",
                mailbox.adapter.id,
            )
            == [(1,)]
        ),
        what="cursor saved",
    )
    telemetry.wait(telemetry_named("ingest.duplicate", message_id=message_id))
    effects = [
        r for r in telemetry.poll() if r["name"] == "ingest.inbound_message"
    ]  # the duplicate came after the first: every effect is in by now
    assert [attrs_of(r)["message_id"] for r in effects] == [message_id]  # effect once
    state = enrollment_state(settings, enrollment)
    assert state is not None and state[0] == "replied"
    assert second.stop() == 0, second.log_tail()
    assert worker.stop() == 0, worker.log_tail()
    telemetry.close()
    inbound.close()


def test_pump_reconnects_by_itself_when_the_server_drops_it(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    mail_server: Any,
    pump_factory: Callable[..., PumpProcess],
) -> None:
    key = tenant()
    mailbox = build_mailbox(client, smtp, mail_server, tenant_key=key)
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    port = _free_port()
    pump = pump_factory("--adapter", mailbox.adapter.id, "--metrics-port", str(port))
    _connected(telemetry, mailbox)

    # Dovecot closes every session of the user (as on a restart or a failover).
    subprocess.run(
        ["doveadm", "-c", str(DOVECOT_CONF), "kick", mailbox.address], check=True, timeout=30
    )
    _connected(telemetry, mailbox, count=2)
    message_id, raw = reply(mailbox.address, "<unrelated@send.example>")
    mail_server.deliver(raw, mailbox.address)
    got = wait_for(lambda: _inbound(inbound, mailbox), what="mail after the reconnect")
    assert [r["message_id"] for r in got] == [message_id]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    text = metrics.decode()
    label = f'adapter_id="{mailbox.adapter.id}",folder="INBOX"'
    assert f"dripdrop_pump_reconnects_total{{{label}}} 1.0" in text
    assert f'dripdrop_pump_messages_total{{{label},intent="reply"}} 1.0' in text
    assert f"dripdrop_pump_connected{{{label}}} 1.0" in text
    assert f"dripdrop_pump_last_success_timestamp_seconds{{{label}}}" in text
    assert pump.stop() == 0, pump.log_tail()
    telemetry.close()
    inbound.close()


def test_pump_uidvalidity_change_resyncs_without_duplicates(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    mail_server: Any,
    pump_factory: Callable[..., PumpProcess],
) -> None:
    key = tenant()
    mailbox = build_mailbox(client, smtp, mail_server, tenant_key=key, folders=("Replies",))
    imap = imap_session(mail_server, mailbox)
    assert imap.create("Replies")[0] == "OK"
    messages = [reply(mailbox.address, f"<s{i}-{uuid.uuid4().hex}@send.example>") for i in range(4)]
    for _, raw in messages[:2]:
        assert imap.append("Replies", None, None, raw)[0] == "OK"
    telemetry = TopicReader(settings, "telemetry")
    inbound = TopicReader(settings, "inbound-messages")
    pump = pump_factory("--adapter", mailbox.adapter.id)
    _at_least(inbound, mailbox, 2, "the first two")

    # The folder is recreated: a new UIDVALIDITY, the same two messages, then a new one.
    assert imap.delete("Replies")[0] == "OK"
    assert imap.create("Replies")[0] == "OK"
    for _, raw in messages[:3]:
        assert imap.append("Replies", None, None, raw)[0] == "OK"
    reset = telemetry.wait(
        telemetry_named("pump.cursor_reset", adapter_id=mailbox.adapter.id), timeout=60
    )
    assert attrs_of(reset[0])["old_uidvalidity"] != attrs_of(reset[0])["uidvalidity"]
    _at_least(inbound, mailbox, 3, "the new one")
    # One more after the resync: records of one tenant share a partition, so a copy of
    # the first two would have been read before this one.
    assert imap.append("Replies", None, None, messages[3][1])[0] == "OK"
    got = _at_least(inbound, mailbox, 4, "the last one")
    assert [r["message_id"] for r in got] == [m for m, _ in messages]
    imap.logout()
    assert pump.stop() == 0, pump.log_tail()
    telemetry.close()
    inbound.close()


def test_pump_postfix_dsn_for_a_step_is_a_hard_bounce_counted(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    mail_server: Any,
    worker_factory: Callable[..., WorkerProcess],
    pump_factory: Callable[..., PumpProcess],
) -> None:
    key = tenant()
    postfix = {"host": mail_server.host, "port": mail_server.smtp_port, "start_tls": False}
    mailbox = build_mailbox(client, smtp, mail_server, tenant_key=key, outbound=postfix)
    recipients = [mail_server.new_address("prospect") for _ in range(19)]
    for address in recipients:
        mail_server.add_user(address)
    unknown = mail_server.new_address("nobody")  # never added: Postfix bounces it
    recipients.append(unknown)
    worker = start_worker(worker_factory)
    telemetry = TopicReader(settings, "telemetry")
    pump = pump_factory("--adapter", mailbox.adapter.id)
    _connected(telemetry, mailbox)
    enrollments = {
        address: str(
            client.enroll(
                tenant_key=key,
                sequence_id=mailbox.world["sequence"].id,
                subscriber_id=f"p-{i}",
                recipient=address,
                data={"first_name": f"P{i}"},
            ).enrollment_id
        )
        for i, address in enumerate(recipients)
    }
    bounced_id = _first_send(settings, enrollments[unknown])

    ingested = telemetry.wait(
        telemetry_named("ingest.inbound_message", intent="bounce"), timeout=120
    )[0]
    assert attrs_of(ingested)["classified_by"] == "rfc3464"
    assert attrs_of(ingested)["enrollment_id"] == enrollments[unknown]
    telemetry.wait(telemetry_named("policy.bounce_threshold", adapter_id=mailbox.adapter.id))

    def bounced() -> tuple[Any, ...] | None:
        assert pump.alive(), pump.log_tail()
        state = enrollment_state(settings, enrollments[unknown])
        return state if state is not None and state[0] == "bounced" else None

    assert wait_for(bounced, what="bounced enrollment")[:2] == ("bounced", "bounce")
    assert rows(
        settings, "SELECT recipient FROM dripdrop.suppressions WHERE tenant_key = %s", key
    ) == [(unknown,)]
    # The report names our send: the DSN that reached the mailbox is Postfix's own.
    reports = mail_server.fetch(mailbox.address)
    ours = bounced_id.strip("<>").encode()
    assert any(ours in raw and b"Status: 5.1.1" in raw for raw in reports)
    for address in recipients[:-1]:
        state = enrollment_state(settings, enrollments[address])
        assert state is not None and state[0] == "active"
    assert pump.stop() == 0, pump.log_tail()
    assert worker.stop() == 0, worker.log_tail()
    telemetry.close()

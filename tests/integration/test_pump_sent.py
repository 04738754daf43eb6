"""Ambiguous sends settled from the mailbox's Sent folder (issue 13 item 5; streams/pump/sent.py).

* ``dripdrop pump`` against the real Dovecot: of an adapter's ambiguous sends, the one whose
  Message-ID is in Sent (found by its RFC 6154 ``\\Sent`` flag) becomes ``sent`` with a
  ``sent`` result published; the one missing for longer than the grace period is re-issued
  once (same Message-ID); a fresh one, a re-issue ambiguous again and one whose enrollment
  is paused are left alone until they are found; a re-issue still waiting has its command
  published again.
* SIGKILL at the worst instructions of the settle (re-issue committed, not published; sent
  result acknowledged, row not committed): the restarted pump finishes the job.
* Gmail (``rfc822msgid:`` in ``SENT``) and Graph (``sentitems`` filtered on
  ``internetMessageId``) lookups against the local API servers, through their HTTP APIs.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import ssl
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from streams import crashpoints
from streams.providers.oauth import OAuth2Token
from streams.pump.config import GmailInbound, GraphInbound
from streams.pump.localrun import PumpProcess
from streams.pump.sent import GmailSent, GraphSent
from streams.sends import list_ambiguous_sends
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import consume
from tests.integration.ledger_rows import LedgerTenant
from tests.integration.pump_api_support import gmail_inbound, graph_inbound
from tests.integration.pump_support import inbound_config
from tests.integration.support import wait_for
from tests.providers.gmail_api import GmailApi
from tests.providers.graph_api import GraphApi


class SentMailbox:
    """A ledger tenant whose adapter's mailbox is a Dovecot user the pump reads."""

    def __init__(self, settings: Settings, mail_server: Any) -> None:
        self.mail_server = mail_server
        self.address = f"sales-{uuid.uuid4().hex[:10]}@dripdrop.test"
        self.password_file = Path(mail_server.add_user(self.address))
        inbound = inbound_config(mail_server, self.address, self.password_file, folders=("INBOX",))
        self.ledger = LedgerTenant(
            settings.database_url,
            config={"host": "127.0.0.1", "port": 1, "inbound": inbound},
            from_address=self.address,
        )

    def ambiguous(self, *, age: timedelta = timedelta(0), reissued: bool = False) -> str:
        """A send a crash left ``ambiguous`` ``age`` ago (re-issued once before, if asked)."""
        execution_id = str(self.ledger.command()["step_execution_id"])
        self.sql(
            "UPDATE dripdrop.step_executions SET status = 'ambiguous', error ="
            " 'interrupted_while_sending', updated_at = now() - %s,"
            " resolution = CASE WHEN %s THEN 'not_sent' END,"
            " resolved_at = CASE WHEN %s THEN now() - %s END WHERE id = %s",
            age, reissued, reissued, age, execution_id,
        )  # fmt: skip
        return execution_id

    def waiting_reissue(self, *, age: timedelta) -> str:
        """A re-issue committed ``intent`` ``age`` ago whose command never reached Kafka."""
        execution_id = str(self.ledger.command()["step_execution_id"])
        self.sql(
            "UPDATE dripdrop.step_executions SET resolution = 'not_sent',"
            " resolved_at = now() - %s WHERE id = %s",
            age, execution_id,
        )  # fmt: skip
        return execution_id

    def sql(self, statement: str, *params: Any) -> None:
        with self.ledger.connect() as conn:
            conn.execute(statement, params)

    def file_in_sent(self, execution_id: str) -> None:
        """What the provider does with a message it accepted: a copy in Sent (IMAP APPEND)."""
        raw = (
            f"From: {self.address}\r\nTo: prospect@example.test\r\nSubject: Hello\r\n"
            f"Message-ID: <{execution_id}@dripdrop.test>\r\n\r\nHi there.\r\n"
        ).encode()
        context = ssl.create_default_context(cafile=str(self.mail_server.ca_file))
        with imaplib.IMAP4_SSL(
            "127.0.0.1", self.mail_server.imaps_port, ssl_context=context
        ) as client:
            client.login(self.address, self.password_file.read_text().strip())
            status, _ = client.append("Sent", "(\\Seen)", None, raw)
            assert status == "OK"

    def row(self, execution_id: str) -> dict[str, Any]:
        return self.ledger.row(execution_id)


def _statuses(box: SentMailbox, *ids: str) -> list[tuple[str, str | None]]:
    return [(box.row(i)["status"], box.row(i)["resolution"]) for i in ids]


def test_pump_settles_ambiguous_sends_from_the_imap_sent_folder(
    settings: Settings,
    api: Any,
    mail_server: Any,
    pump_factory: Callable[..., PumpProcess],
) -> None:
    box = SentMailbox(settings, mail_server)
    found = box.ambiguous()
    missing = box.ambiguous(age=timedelta(hours=1))
    fresh = box.ambiguous()
    again = box.ambiguous(age=timedelta(hours=1), reissued=True)
    waiting = box.waiting_reissue(age=timedelta(hours=1))
    paused = box.ambiguous(age=timedelta(hours=1))  # a re-issue would not go out: left alone
    box.ledger.set_enrollment_state(str(box.row(paused)["enrollment_id"]), "paused")
    box.file_in_sent(found)
    before = box.row(waiting)["resolved_at"]

    pump = pump_factory(
        "--adapter", box.ledger.adapter_id, "--sent-check-seconds", "0.5",
        "--sent-grace-seconds", "600",
    )  # fmt: skip
    wait_for(
        lambda: (
            _statuses(box, found, missing) == [("sent", "sent"), ("intent", "not_sent")]
            and box.row(waiting)["resolved_at"] > before
        ),
        timeout=60,
        what="the Sent-folder check",
    )
    time.sleep(2)  # a few more checks: nothing else may change
    assert _statuses(box, fresh, again, paused) == [
        ("ambiguous", None),
        ("ambiguous", "not_sent"),
        ("ambiguous", None),
    ]
    assert box.row(found)["sent_at"] is not None

    results = consume(settings, "dispatch-results", expect=1, settle=0.5)
    assert [(v["step_execution_id"], v["status"]) for _, _, v, _ in results] == [(found, "sent")]
    commands = consume(settings, "dispatch", expect=2, settle=0.5)
    assert sorted(v["step_execution_id"] for _, _, v, _ in commands) == sorted([missing, waiting])
    by_id = {v["step_execution_id"]: v for _, _, v, _ in commands}
    assert by_id[missing]["headers"]["Message-ID"] == f"<{missing}@dripdrop.test>"  # the same
    resolved = [
        v for _, _, v, _ in consume(settings, "telemetry", expect=3, settle=0.5)
        if v["name"] == "send.resolved"
    ]  # fmt: skip
    assert len(resolved) == 3 and all('"by": "sent_folder"' in v["attributes"] for v in resolved)

    box.file_in_sent(fresh)  # filed late: the next check finds it
    box.file_in_sent(again)
    wait_for(
        lambda: _statuses(box, fresh, again) == [("sent", "sent"), ("sent", "sent")],
        timeout=30,
        what="the late copies",
    )
    assert pump.alive()
    assert box.password_file.read_text().strip() not in pump.log_text()


@pytest.mark.parametrize("point", ["sends.reissue_committed", "sends.sent_published"])
def test_pump_killed_mid_settle_finishes_on_restart(
    settings: Settings,
    api: Any,
    mail_server: Any,
    pump_factory: Callable[..., PumpProcess],
    point: str,
) -> None:
    box = SentMailbox(settings, mail_server)
    execution_id = box.ambiguous(age=timedelta(hours=1))
    if point == "sends.sent_published":
        box.file_in_sent(execution_id)
    args = ("--adapter", box.ledger.adapter_id, "--sent-check-seconds", "0.5")

    first = pump_factory(*args, "--sent-grace-seconds", "600", env={crashpoints.ENV: point})
    wait_for(lambda: not first.alive(), timeout=60, what=f"the crash at {point}")
    assert f"crash point {point}" in first.log_text(), first.log_tail()
    if point == "sends.reissue_committed":  # committed intent, command never published
        assert _statuses(box, execution_id) == [("intent", "not_sent")]
        assert consume(settings, "dispatch", expect=0, settle=1.0) == []
    else:  # the sent result is in Kafka, the row still ambiguous
        assert _statuses(box, execution_id) == [("ambiguous", None)]

    pump_factory(*args, "--sent-grace-seconds", "1")
    if point == "sends.reissue_committed":
        commands = wait_for(
            lambda: consume(settings, "dispatch", expect=1, settle=0.5, timeout=2) or None,
            timeout=60,
            what="the command published again",
        )
        assert [v["step_execution_id"] for _, _, v, _ in commands] == [execution_id]
        assert _statuses(box, execution_id) == [("intent", "not_sent")]
    else:
        wait_for(
            lambda: _statuses(box, execution_id) == [("sent", "sent")],
            timeout=60,
            what="the row committed sent",
        )
        results = consume(settings, "dispatch-results", expect=2, settle=0.5)
        # the first pump's result and the restart's: the processor ignores the second
        assert {(v["step_execution_id"], v["status"]) for _, _, v, _ in results} == {
            (execution_id, "sent")
        }


def _token(server: Any, tmp_path: Path, token_url: str) -> OAuth2Token:
    client_secret = tmp_path / f"cs-{uuid.uuid4().hex[:6]}"
    client_secret.write_text(server.tokens.client_secret)
    refresh = tmp_path / f"rt-{uuid.uuid4().hex[:6]}"
    refresh.write_text(server.tokens.refresh_token)
    return OAuth2Token(
        token_url,
        server.tokens.client_id,
        {"secret": f"file:{client_secret}"},
        {"secret": f"file:{refresh}"},
    )


def _raw(message_id: str) -> bytes:
    return (
        "From: sales@example.com\r\nTo: prospect@example.test\r\nSubject: Hello\r\n"
        f"Message-ID: <{message_id}>\r\n\r\nHi there.\r\n"
    ).encode()


def test_gmail_sent_lookup_finds_only_what_is_in_sent(tmp_path: Path) -> None:
    asyncio.run(_gmail_lookup(tmp_path))


async def _gmail_lookup(tmp_path: Path) -> None:
    with GmailApi() as server:
        cfg = GmailInbound(**gmail_inbound(server, tmp_path, "push-token-0123456789")["gmail"])
        token = _token(server, tmp_path, server.token_url)
        sent, inbox_only, unknown = (f"{uuid.uuid4()}@dripdrop.test" for _ in range(3))
        async with httpx.AsyncClient() as http:  # users.messages.send, as the provider does
            answer = await http.post(
                f"{server.url}/gmail/v1/users/me/messages/send",
                headers={"Authorization": f"Bearer {await token.access_token()}"},
                json={"raw": base64.urlsafe_b64encode(_raw(sent)).decode()},
            )
        assert answer.status_code == 200, answer.text
        server.deliver(_raw(inbox_only))  # the same kind of id, but received, not sent

        found = await GmailSent(cfg, token).find([sent, inbox_only, unknown])

    assert found == {sent}


def test_graph_sent_lookup_finds_only_what_is_in_sent_items(tmp_path: Path) -> None:
    asyncio.run(_graph_lookup(tmp_path))


async def _graph_lookup(tmp_path: Path) -> None:
    with GraphApi() as server:
        inbound = graph_inbound(server, tmp_path, "http://127.0.0.1:9/notify", "state-0123456789")
        cfg = GraphInbound(**inbound["graph"])
        token = _token(server, tmp_path, server.token_url)
        sent, unknown = (f"{uuid.uuid4()}@dripdrop.test" for _ in range(2))
        async with httpx.AsyncClient() as http:  # sendMail with MIME, as the provider does
            answer = await http.post(
                f"{server.api_base}/me/sendMail",
                headers={
                    "Authorization": f"Bearer {await token.access_token()}",
                    "Content-Type": "text/plain",
                },
                content=base64.b64encode(_raw(sent)),
            )
        assert answer.status_code == 202, answer.text

        found = await GraphSent(cfg, token).find([sent, unknown])

    assert found == {sent}


def test_sent_check_lists_only_its_adapters_ambiguous_sends(settings: Settings) -> None:
    """The list the check reads is the adapter's own: another adapter's ambiguous send of the
    same tenant and another tenant's are not in it."""
    mine = LedgerTenant(settings.database_url)
    theirs = LedgerTenant(settings.database_url)
    ids = []
    for ledger in (mine, theirs):
        command = ledger.command()
        ledger.set_status(command["step_execution_id"], "ambiguous")
        ids.append(command["step_execution_id"])
    engine = create_engine(settings.sqlalchemy_url)
    try:
        listed = list_ambiguous_sends(engine, adapter_id=mine.adapter_id)
    finally:
        engine.dispose()
    assert [s.step_execution_id for s in listed] == [ids[0]]
    assert datetime.now(UTC) - listed[0].since < timedelta(minutes=5)

"""``resolve_ambiguous_send`` / ``dripdrop sends``: list and settle ambiguous sends (issue 11).

Ledger rows are written straight in SQL (``LedgerTenant``) and marked ``ambiguous`` as a
crash mid-send leaves them; what the resolution publishes is read back from the topics. The
processor's side (an ambiguous result holds the enrollment, a ``sent`` one lets it go on)
is in tests/agents/test_processor.py and the worker test in test_sends_ambiguous_crash.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from dripdrop_core.errors import ConflictError, NotFoundError
from streams.api import AlreadyReissuedError, DripDrop, NotAmbiguousError
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import CliResult, consume
from tests.integration.ledger_rows import LedgerTenant
from tests.integration.smtp_sink import SmtpSink
from tests.integration.test_sender import run_with_sender


@pytest.fixture
def ledger(services: Settings) -> LedgerTenant:
    return LedgerTenant(services.database_url, config={"host": "127.0.0.1", "port": 1})


def ambiguous(ledger: LedgerTenant, **overrides: Any) -> dict[str, Any]:
    """A dispatch command whose ledger row a crash mid-send left ``ambiguous``."""
    command = ledger.command(**overrides)
    with ledger.connect() as conn:
        conn.execute(
            "UPDATE dripdrop.step_executions SET status = 'ambiguous',"
            " error = 'interrupted_while_sending' WHERE id = %s",
            (command["step_execution_id"],),
        )
    return command


def telemetry(settings: Settings, expect: int) -> list[dict[str, Any]]:
    return [
        {**value, "attributes": json.loads(value["attributes"])}
        for _, _, value, _ in consume(settings, "telemetry", expect=expect, settle=0.5)
    ]


def test_list_shows_only_the_tenants_ambiguous_sends(
    api: DripDrop, ledger: LedgerTenant, services: Settings
) -> None:
    held = ambiguous(ledger)
    ledger.command()  # intent: not listed
    other = LedgerTenant(services.database_url)
    theirs = ambiguous(other)

    [found] = api.list_ambiguous_sends(tenant_key=ledger.tenant_key)

    assert found.step_execution_id == held["step_execution_id"]
    assert (found.enrollment_id, found.adapter_id) == (held["enrollment_id"], ledger.adapter_id)
    assert (found.recipient, found.step_key) == (held["recipient"], "first")
    assert found.message_id == held["headers"]["Message-ID"].strip("<>")  # stored bare
    assert found.error == "interrupted_while_sending" and not found.reissued
    everyone = {s.step_execution_id for s in api.list_ambiguous_sends()}
    assert {held["step_execution_id"], theirs["step_execution_id"]} <= everyone


def test_resolve_sent_marks_the_row_sent_and_publishes_a_sent_result(
    api: DripDrop, ledger: LedgerTenant, settings: Settings
) -> None:
    command = ambiguous(ledger)
    execution_id = command["step_execution_id"]

    settled = api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=True)

    assert (settled.resolution, settled.status) == ("sent", "sent")
    row = ledger.row(execution_id)
    assert (row["status"], row["resolution"]) == ("sent", "sent")
    assert row["sent_at"] is not None and row["resolved_at"] is not None
    [(key, _, result, _)] = consume(settings, "dispatch-results", expect=1)
    assert key == ledger.tenant_key
    assert result["status"] == "sent" and result["step_execution_id"] == execution_id
    assert result["enrollment_id"] == command["enrollment_id"]
    [event] = telemetry(settings, 1)
    assert event["name"] == "send.resolved"
    assert event["attributes"]["resolution"] == "sent"
    assert event["attributes"]["step_execution_id"] == execution_id
    with pytest.raises(NotAmbiguousError):  # settled once: not again
        api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=True)
    assert api.list_ambiguous_sends(tenant_key=ledger.tenant_key) == []


def test_resolve_not_sent_reissues_once_with_the_same_message_id(
    api: DripDrop, services: Settings, settings: Settings
) -> None:
    with SmtpSink() as smtp:
        ledger = LedgerTenant(services.database_url, config=smtp.adapter_config())
        command = ambiguous(ledger)
        execution_id = command["step_execution_id"]

        settled = api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=False)

        assert (settled.resolution, settled.status) == ("not_sent", "intent")
        row = ledger.row(execution_id)
        assert (row["status"], row["resolution"], row["error"]) == ("intent", "not_sent", None)
        [(_, _, reissued, _)] = consume(settings, "dispatch", expect=1)
        assert reissued["step_execution_id"] == execution_id
        assert reissued["headers"] == command["headers"]  # the same Message-ID, the same mail
        assert (reissued["subject"], reissued["recipient"]) == (
            command["subject"],
            command["recipient"],
        )
        [event] = telemetry(settings, 1)
        assert (event["name"], event["attributes"]["resolution"]) == ("send.resolved", "not_sent")

        # What the sender does with the re-issued command, delivered twice: one email.
        results = run_with_sender(
            services.database_url,
            ledger,
            lambda sender: sender.deliver_batch([reissued, reissued]),
        )
        assert [r["status"] for r in results] == ["sent"]
        [received] = smtp.messages
        assert received.header("Message-ID") == command["headers"]["Message-ID"]
        assert ledger.row(execution_id)["resolution"] == "not_sent"

    with pytest.raises(NotAmbiguousError):
        api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=False)
    ledger.set_status(execution_id, "ambiguous")  # the re-issue itself ended ambiguous
    [listed] = api.list_ambiguous_sends(tenant_key=ledger.tenant_key)
    assert listed.reissued
    with pytest.raises(AlreadyReissuedError):
        api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=False)
    settled = api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=True)
    assert settled.status == "sent"  # --sent is still possible


def test_resolve_not_sent_while_the_reissue_waits_publishes_the_command_again(
    api: DripDrop, ledger: LedgerTenant, settings: Settings
) -> None:
    command = ambiguous(ledger)
    execution_id = command["step_execution_id"]
    for _ in range(2):  # e.g. the first publish failed after the commit
        api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=False)
    records = consume(settings, "dispatch", expect=2)
    assert [r[2]["step_execution_id"] for r in records] == [execution_id] * 2
    assert ledger.row(execution_id)["status"] == "intent"  # the ledger sends it once


def test_resolve_not_sent_on_a_paused_enrollment_is_refused(
    api: DripDrop, ledger: LedgerTenant
) -> None:
    command = ambiguous(ledger)
    ledger.set_enrollment_state(command["enrollment_id"], "paused")
    with pytest.raises(ConflictError, match="resume it first"):
        api.resolve_ambiguous_send(
            command["step_execution_id"], tenant_key=ledger.tenant_key, sent=False
        )
    assert ledger.row(command["step_execution_id"])["status"] == "ambiguous"


@pytest.mark.parametrize("sent", [True, False])
def test_resolve_unknown_or_other_tenants_send_is_not_found_and_changes_nothing(
    sent: bool, api: DripDrop, ledger: LedgerTenant, services: Settings, settings: Settings
) -> None:
    theirs = ambiguous(LedgerTenant(services.database_url))
    for execution_id in (theirs["step_execution_id"], str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFoundError):
            api.resolve_ambiguous_send(execution_id, tenant_key=ledger.tenant_key, sent=sent)
    with ledger.connect() as conn:
        row = conn.execute(
            "SELECT status, resolution FROM dripdrop.step_executions WHERE id = %s",
            (theirs["step_execution_id"],),
        ).fetchone()
    assert row == ("ambiguous", None)
    assert consume(settings, "dispatch-results", expect=0, timeout=1) == []
    assert consume(settings, "dispatch", expect=0, timeout=1) == []


def test_cli_lists_and_resolves(
    cli: Callable[..., CliResult], ledger: LedgerTenant, services: Settings
) -> None:
    command = ambiguous(ledger)
    execution_id = command["step_execution_id"]

    listed = cli("sends", "ambiguous", "--tenant", ledger.tenant_key, "--json")
    assert listed.exit_code == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["step_execution_id"] == execution_id
    assert row["message_id"] == command["headers"]["Message-ID"].strip("<>")
    assert {"enrollment_id", "adapter_id", "recipient", "step", "since"} <= set(row)
    table = cli("sends", "ambiguous", "--tenant", ledger.tenant_key)
    assert table.exit_code == 0 and "ambiguous sends" in table.stdout

    neither = cli("sends", "resolve", execution_id, "--tenant", ledger.tenant_key)
    assert neither.exit_code == 2
    other = LedgerTenant(services.database_url)
    wrong = cli("sends", "resolve", execution_id, "--tenant", other.tenant_key, "--sent")
    assert wrong.exit_code == 3 and "not found" in wrong.stderr

    done = cli("sends", "resolve", execution_id, "--tenant", ledger.tenant_key, "--sent", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "sent"
    again = cli("sends", "resolve", execution_id, "--tenant", ledger.tenant_key, "--not-sent")
    assert again.exit_code == 5 and "not_ambiguous" in again.stderr
    empty = cli("sends", "ambiguous", "--tenant", ledger.tenant_key, "--json")
    assert json.loads(empty.stdout) == []

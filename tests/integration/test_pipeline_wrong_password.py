"""A wrong password costs no prospect a step (SPEC §7, §5.5), against the real Postfix.

Two mailboxes of one pool log in to Postfix submission (STARTTLS with the test CA, AUTH
PLAIN against Dovecot), each with its password behind a ``{"secret": "file:…"}``
reference; one file holds a wrong password. Ten prospects are enrolled in a two-step
outbound sequence. The wrong password is an adapter failure: those sends are deferred,
the mailbox's circuit opens after ``circuit_threshold`` of them, and the other mailbox
keeps sending both steps. Then the file is rewritten with the right password (no restart,
no API call): the next probe logs in, the circuit closes, and every held step goes out
exactly once, spaced by the mailbox's gap, and the follow-ups thread under it. What
Dovecot stored is read back over IMAPS.
"""

from __future__ import annotations

import email
import os
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration._api_fixtures import run_cli
from tests.integration.mail_fixtures import MailServer
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    rows,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.support import WorkerProcess, wait_for

PROSPECTS = 10
THRESHOLD = 3
GAP_SECONDS = 2
FOLLOW_UP_DELAY_SECONDS = 6


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "partitions": 2,
            "circuit_threshold": THRESHOLD,
            "circuit_cooldown_seconds": 3.0,
        }
    )


def _mailbox_config(mail_server: MailServer, username: str, password_file: Path) -> dict[str, Any]:
    return {
        "host": "localhost",
        "port": mail_server.submission_port,
        "start_tls": True,
        "tls_ca_file": str(mail_server.ca_file),
        "username": username,
        "password": {"secret": f"file:{password_file}"},
    }


def _rewrite(path: Path, content: str) -> None:
    """Replace the file's content in one step (a reader sees the old or the new one)."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(content + "\n")
    os.chmod(staged, 0o600)
    os.replace(staged, path)


def _sent(settings: Settings, key: str) -> list[tuple[str, str, str, Any]]:
    """``(enrollment_id, adapter_id, out_message_id, sent_at)`` of the tenant's sent rows."""
    return [
        (str(e), str(a), str(m), s)
        for e, a, m, s in rows(
            settings,
            "SELECT enrollment_id::text, adapter_id::text, out_message_id, sent_at"
            " FROM dripdrop.step_executions WHERE tenant_key = %s AND status = 'sent'",
            key,
        )
    ]


def _received(mail_server: MailServer, address: str, count: int) -> list[Message]:
    return [email.message_from_bytes(raw) for raw in mail_server.wait_for(address, count)]


def test_a_wrong_password_opens_the_circuit_and_the_rewritten_file_releases_every_held_step(
    settings: Settings,
    client: DripDrop,
    mail_server: MailServer,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    key = tenant()
    good_address = mail_server.new_address("good")
    good_file = mail_server.add_user(good_address)
    bad_address = mail_server.new_address("bad")
    mail_server.add_user(bad_address)
    bad_file = tmp_path / "bad.password"
    _rewrite(bad_file, mail_server.password(bad_address) + "-wrong")
    prospects = [mail_server.new_address(f"prospect{i}") for i in range(PROSPECTS)]
    for address in prospects:
        mail_server.add_user(address)

    good, bad = (
        client.create_channel_adapter(
            tenant_key=key,
            name=name,
            provider="smtp",
            from_address=address,
            health_state="active",
            min_gap_seconds=GAP_SECONDS,
            config=_mailbox_config(mail_server, address, path),
        )
        for name, address, path in (
            ("good", good_address, good_file),
            ("bad", bad_address, bad_file),
        )
    )
    pool = client.create_adapter_pool(tenant_key=key, name="sales", on_pin_unavailable="pause")
    for adapter in (good, bad):
        client.add_pool_member(pool.id, tenant_key=key, adapter_id=adapter.id, weight=1)
    sequence = client.create_sequence(tenant_key=key, key="cold")
    version = client.create_sequence_version(
        sequence.id, tenant_key=key, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    for position in range(2):
        client.create_step(
            version.id,
            tenant_key=key,
            key=f"s{position}",
            position=position,
            subject_template="Hello {{ first_name }}" if position == 0 else "Re: Hello",
            body_template=f"Step {position}",
            delay_seconds=0 if position == 0 else FOLLOW_UP_DELAY_SECONDS,
        )

    telemetry = TopicReader(settings, "telemetry")
    worker = start_worker(worker_factory, settings)
    by_recipient = {
        address: str(
            client.enroll(
                tenant_key=key,
                sequence_id=sequence.id,
                subscriber_id=f"p-{i}",
                recipient=address,
                data={"first_name": f"P{i}"},
            ).enrollment_id
        )
        for i, address in enumerate(prospects)
    }

    # The wrong password opens the bad mailbox's circuit, after exactly THRESHOLD failures.
    opened = telemetry.wait(
        telemetry_named("provider.circuit_open", adapter_id=bad.id), timeout=120, what="open"
    )[0]
    assert attrs_of(opened)["opens"] == 1
    before_open = telemetry.records[: telemetry.records.index(opened)]
    deferred_before_open = [
        attrs_of(r)
        for r in before_open
        if telemetry_named("dispatch.retry_scheduled", adapter_id=bad.id)(r)
    ]
    # The THRESHOLD-th failure opens the circuit (its retry is scheduled right after).
    assert len(deferred_before_open) == THRESHOLD - 1
    assert all(a["cause"] == "adapter" for a in deferred_before_open), deferred_before_open
    assert all("auth_failed" in str(a["error"]) for a in deferred_before_open)

    pins = dict(
        rows(
            settings,
            "SELECT recipient, adapter_id::text FROM dripdrop.enrollments WHERE tenant_key = %s",
            key,
        )
    )
    assert set(pins) == set(prospects) and set(pins.values()) == {good.id, bad.id}
    on_good = [r for r in prospects if pins[r] == good.id]
    on_bad = [r for r in prospects if pins[r] == bad.id]

    # `enrollment explain` of a held prospect: pinned to the bad mailbox, step 0 not sent.
    explained = run_cli(settings, "enrollment", "explain", by_recipient[on_bad[0]], "--tenant", key)
    assert explained.exit_code == 0, explained.stderr
    assert f"pinned adapter: {bad.id}" in explained.stdout
    assert "0 s0 sent" not in explained.stdout, explained.stdout

    # While it is held, the good mailbox sends both steps of its prospects.
    def good_done() -> list[tuple[str, str, str, Any]] | None:
        assert worker.alive(), worker.log_tail()
        sent = _sent(settings, key)
        return sent if len([s for s in sent if s[1] == good.id]) >= 2 * len(on_good) else None

    wait_for(good_done, timeout=120, what="both steps of the good mailbox's prospects")
    assert not [s for s in _sent(settings, key) if s[1] == bad.id]  # nothing went with it
    held = {
        attrs_of(r)["step_execution_id"]
        for r in telemetry.poll()
        if telemetry_named("dispatch.retry_scheduled", adapter_id=bad.id)(r)
    }
    # First steps of its prospects that were tried and deferred (the others were held
    # by the open circuit before their first try).
    assert 1 <= len(held) <= len(on_bad)

    # The operator fixes the file: no restart, no API call.
    _rewrite(bad_file, mail_server.password(bad_address))
    telemetry.wait(
        telemetry_named("provider.circuit_closed", adapter_id=bad.id), timeout=180, what="closed"
    )

    def all_sent() -> list[tuple[str, str, str, Any]] | None:
        assert worker.alive(), worker.log_tail()
        sent = _sent(settings, key)
        return sent if len(sent) >= 2 * PROSPECTS else None

    sent = wait_for(all_sent, timeout=180, what="both steps of every prospect")

    def completed() -> list[tuple[Any, ...]] | None:
        states = rows(
            settings,
            "SELECT state, count(*) FROM dripdrop.enrollments WHERE tenant_key = %s GROUP BY 1",
            key,
        )
        return states if states == [("completed", PROSPECTS)] else None

    wait_for(completed, timeout=60, what="every enrollment completed")
    assert worker.stop() == 0
    statuses = rows(
        settings,
        "SELECT status, count(*) FROM dripdrop.step_executions WHERE tenant_key = %s GROUP BY 1",
        key,
    )
    assert statuses == [("sent", 2 * PROSPECTS)]  # none failed, cancelled or ambiguous
    assert Counter(a for _, a, _, _ in sent) == {good.id: 2 * len(on_good), bad.id: 2 * len(on_bad)}
    assert all(a == pins[r] for r in prospects for e, a, _, _ in sent if e == by_recipient[r])

    # Hand-offs of one mailbox at least its gap apart, the released ones included.
    for adapter in (good, bad):
        times = sorted(s for _, a, _, s in sent if a == adapter.id)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= timedelta(seconds=GAP_SECONDS), (adapter.name, gaps)

    # What Dovecot stored: a marker delivered after the worker stopped arrives behind
    # anything it handed over, then each prospect has exactly its two steps, threaded.
    ledger_ids = {m for _, _, m, _ in sent}
    for address in prospects:
        marker = f"<marker-{address}>"
        mail_server.deliver(
            f"From: postmaster@{mail_server.domains[0]}\r\nTo: {address}\r\n"
            f"Subject: marker\r\nMessage-ID: {marker}\r\n\r\nmarker\r\n".encode(),
            address,
        )
        messages = _received(mail_server, address, 3)
        assert marker in [m["Message-ID"] for m in messages], address
        steps = [m for m in messages if m["Message-ID"] != marker]
        assert len(steps) == 2, [m["Message-ID"] for m in steps]
        first, follow_up = sorted(steps, key=lambda m: m["Subject"].startswith("Re:"))
        assert first["Message-ID"] != follow_up["Message-ID"]
        # The ledger keeps the id without its angle brackets.
        assert {first["Message-ID"].strip("<>"), follow_up["Message-ID"].strip("<>")} <= ledger_ids
        assert follow_up["In-Reply-To"] == first["Message-ID"]
        assert first["Message-ID"] in follow_up["References"]
        sender = good_address if address in on_good else bad_address
        assert first["From"] == follow_up["From"] == sender

    names = Counter(r["name"] for r in telemetry.poll())
    assert names["dispatch.failed"] == 0 and names["dispatch.skipped"] == 0
    opens = [
        attrs_of(r)["opens"]
        for r in telemetry.records
        if telemetry_named("provider.circuit_open", adapter_id=bad.id)(r)
    ]
    print(
        f"sent {len(sent)} (good {2 * len(on_good)}, bad {2 * len(on_bad)}),"
        f" held {len(held)}, circuit opens {opens},"
        f" probes {names['provider.circuit_probe']},"
        f" deferred {names['dispatch.retry_scheduled']}"
    )
    telemetry.close()

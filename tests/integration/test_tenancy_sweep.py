"""Tenancy sweep (issue 11 item 5): every API method, CLI command and input record that
names an id, tried with another tenant's id; every read path tried across tenants.

The lists are generated, not written: the public methods of ``streams.api.DripDrop`` and
the leaf commands of ``dripdrop --help``. Each needs a case here or a place in the
allow-list of id-less ones, so a new method or command without a case fails this test.

What "0 cross-tenant reads or writes" means here:

* a call naming another tenant's id raises ``TenantMismatchError`` / ``NotFoundError``
  (CLI: exit 4 / 3) and prints none of the other tenant's data;
* a listing (ambiguous sends, audit, telemetry) shows none of the other tenant's rows;
* a record on an input topic naming another tenant's id is dead-lettered with a reason
  or changes nothing of that tenant (its PostgreSQL rows are byte-for-byte the same, and
  it still sends through its own mailbox afterwards);
* no refused call produces a record (every topic's high watermark is unchanged).
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import pytest
import typer
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine

from dripdrop_core.errors import NotFoundError, TenantMismatchError
from streams.api import DripDrop
from streams.cli.main import app as cli_app
from streams.codecs import Codecs, partition_for
from streams.settings import Settings
from streams.topics import HOST_INPUTS
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import CliResult
from tests.integration.ledger_rows import LedgerTenant
from tests.integration.robust_support import TopicReader, World, build_world, rows, wait_ready
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, producer, wait_for
from tests.integration.test_inspect import _world as inspect_world
from tests.integration.test_pipeline_dead_letter import inbound_record

REFUSED = (TenantMismatchError, NotFoundError)
REFUSED_EXITS = (3, 4)  # streams.cli.output: not found, tenant mismatch

ID_LESS_METHODS = frozenset(
    {
        "close",
        "relay_outbox",
        "pending_outbox",
        "create_channel_adapter",
        "create_adapter_pool",
        "create_sequence",
        # Suppression entries are addresses of the caller's own list, not ids; that an
        # unsuppress cannot reach another tenant's list is tried with a real worker below.
        "add_suppression",
        "import_suppressions",
        "remove_suppression",
    }
)
"""Public ``DripDrop`` methods that take no id of an existing entity."""

ID_LESS_COMMANDS = frozenset(
    {
        "adapter create",
        "pool create",
        "sequence create",
        "outbox relay",
        "outbox pending",
        "db upgrade",
        "topics create",
        "suppressions add",
        "suppressions import",
        # Long-running services of the operator, not calls of a tenant: each checks the
        # tenant of what reaches it (a one-click token is bound to its tenant,
        # test_web_unsubscribe.py; a webhook's URL names tenant and adapter, which must
        # match, test_webhooks.py; the pump produces each mailbox's mail under the
        # adapter's own tenant, test_pump_*.py).
        "web",
        "webhooks serve",
        "pump",
    }
)
"""Leaf CLI commands that take no id of an existing entity."""


def public_methods() -> set[str]:
    """Every public method of ``DripDrop`` (properties are not calls)."""
    return {
        name
        for name, member in inspect.getmembers(DripDrop)
        if not name.startswith("_")
        and callable(member)
        and not isinstance(inspect.getattr_static(DripDrop, name), property)
    }


def cli_commands() -> set[str]:
    """Every leaf command of ``dripdrop``, as its space-separated path."""
    found: set[str] = set()

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
        else:
            found.add(" ".join(path))

    walk(typer.main.get_command(cli_app), [])
    assert found, "no CLI command found"
    return found


def test_the_sweep_knows_every_method_and_command() -> None:
    """A new public method or CLI command needs a case below (or the id-less allow-list)."""
    methods = public_methods()
    assert methods - ID_LESS_METHODS - set(API_CASES) == set(), "API methods without a case"
    commands = cli_commands()
    assert commands - ID_LESS_COMMANDS - set(CLI_CASES) == set(), "CLI commands without a case"
    assert isinstance(click, object)  # the walk reads Click's command tree (Typer's)


# ---------------------------------------------------------------- the two tenants


@dataclass
class Victim:
    """The tenant whose ids the attacker names: every kind of row it can have."""

    tenant: str
    adapter_id: str
    from_address: str
    pool_id: str
    sequence_id: str
    version_id: str
    step_id: str
    enrollment_id: str
    ambiguous_tenant: str
    ambiguous_id: str
    recipient: str
    throttle_id: str


@dataclass
class Attacker:
    tenant: str
    adapter_id: str
    pool_id: str
    sequence_id: str
    version_id: str
    lifecycle_version_id: str


def _victim(api: DripDrop, engine: Engine, ledger: LedgerTenant) -> Victim:
    tenant = f"victim_{uuid.uuid4().hex[:10]}"
    w = inspect_world(api, engine, tenant)
    command = ledger.command()
    with ledger.connect() as conn:
        conn.execute(
            "UPDATE dripdrop.step_executions SET status = 'ambiguous',"
            " error = 'interrupted_while_sending' WHERE id = %s",
            (command["step_execution_id"],),
        )
    return Victim(
        tenant=tenant,
        adapter_id=w["adapter"].id,
        from_address=w["adapter"].from_address,
        pool_id=w["pool"].id,
        sequence_id=rows_one(
            engine, "SELECT id::text FROM dripdrop.sequences WHERE tenant_key = %s", tenant
        ),
        version_id=rows_one(
            engine, "SELECT id::text FROM dripdrop.sequence_versions WHERE tenant_key = %s", tenant
        ),
        step_id=w["steps"][0],
        enrollment_id=w["live"],
        ambiguous_tenant=ledger.tenant_key,
        ambiguous_id=command["step_execution_id"],
        recipient="prospect@example.com",
        throttle_id=api.set_domain_throttle(
            tenant_key=tenant, domain="gmail.com", adapter_id=w["adapter"].id, per_hour=20
        ).id,
    )


def rows_one(engine: Engine, sql: str, *params: Any) -> str:
    with engine.connect() as conn:
        (value,) = conn.exec_driver_sql(sql, params).one()
    return str(value)


def _attacker(api: DripDrop) -> Attacker:
    tenant = f"attacker_{uuid.uuid4().hex[:10]}"
    adapter = api.create_channel_adapter(
        tenant_key=tenant, name="mine", from_address="me@attacker.example", daily_cap=5
    )
    pool = api.create_adapter_pool(tenant_key=tenant, name="mine")
    api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id)
    sequence = api.create_sequence(tenant_key=tenant, key="mine")
    version = api.create_sequence_version(
        sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    lifecycle = api.create_sequence_version(sequence.id, tenant_key=tenant, version=2)
    return Attacker(tenant, adapter.id, pool.id, sequence.id, version.id, lifecycle.id)


def tenant_tables(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = 'dripdrop' AND column_name = 'tenant_key'"
            )
        )


def snapshot(engine: Engine, *tenants: str) -> dict[str, list[str]]:
    """Every row of ``tenants`` in every table with a ``tenant_key``, as JSON text."""
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table in tenant_tables(engine):
            out[table] = sorted(
                r[0]
                for r in conn.exec_driver_sql(
                    f"SELECT row_to_json(t)::text FROM dripdrop.{table} t"  # noqa: S608
                    " WHERE t.tenant_key = ANY(%s)",
                    (list(tenants),),
                )
            )
    return out


def high_watermarks(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"sweep-{uuid.uuid4()}"}
    )
    try:
        meta = consumer.list_topics(timeout=10)
        out = {}
        for name, topic in meta.topics.items():
            if not name.startswith(settings.topic_prefix):
                continue
            for p in topic.partitions:
                out[(name, p)] = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=10
                )[1]
        return out
    finally:
        consumer.close()


# ---------------------------------------------------------------- API cases

Attempt = Callable[[DripDrop, Victim, Attacker], Any]
"""One call as the attacker (or as the victim naming the attacker's id): must be refused."""
Listing = Callable[[DripDrop, Victim, Attacker], None]
"""A read path as the attacker: asserts none of the victim's rows is in it."""


def _no_victim_ambiguous(api: DripDrop, v: Victim, b: Attacker) -> None:
    listed = api.list_ambiguous_sends(tenant_key=b.tenant)
    assert v.ambiguous_id not in {s.step_execution_id for s in listed}
    assert {s.tenant_key for s in listed} <= {b.tenant}


def _no_victim_suppressions(api: DripDrop, v: Victim, b: Attacker) -> None:
    for entries in (
        api.list_suppressions(tenant_key=b.tenant),
        list(api.iter_suppressions(tenant_key=b.tenant)),
    ):
        assert {s.tenant_key for s in entries} <= {b.tenant}


def _no_victim_throttles(api: DripDrop, v: Victim, b: Attacker) -> None:
    listed = api.list_domain_throttles(tenant_key=b.tenant)
    assert v.throttle_id not in {t.id for t in listed}
    assert {t.tenant_key for t in listed} <= {b.tenant}


_MSG = {
    "message_id": "<sweep@example.com>",
    "from": "prospect@example.com",
    "to": "rep@send.example",
}

API_CASES: dict[str, list[Attempt | Listing]] = {
    "set_domain_throttle": [
        lambda a, v, b: a.set_domain_throttle(
            tenant_key=b.tenant, domain="gmail.com", adapter_id=v.adapter_id, per_hour=1
        ),
    ],
    "remove_domain_throttle": [
        lambda a, v, b: a.remove_domain_throttle(v.throttle_id, tenant_key=b.tenant),
    ],
    "list_domain_throttles": [_no_victim_throttles],
    "add_pool_member": [
        lambda a, v, b: a.add_pool_member(v.pool_id, tenant_key=b.tenant, adapter_id=b.adapter_id),
        lambda a, v, b: a.add_pool_member(b.pool_id, tenant_key=b.tenant, adapter_id=v.adapter_id),
        lambda a, v, b: a.add_pool_member(v.pool_id, tenant_key=v.tenant, adapter_id=b.adapter_id),
    ],
    "create_sequence_version": [
        lambda a, v, b: a.create_sequence_version(v.sequence_id, tenant_key=b.tenant, version=7),
        lambda a, v, b: a.create_sequence_version(
            b.sequence_id,
            tenant_key=b.tenant,
            version=7,
            mode="outbound",
            config={"pool_id": v.pool_id},
        ),
    ],
    "create_step": [
        lambda a, v, b: a.create_step(v.version_id, tenant_key=b.tenant, key="x", position=9),
        lambda a, v, b: a.create_step(
            b.version_id, tenant_key=b.tenant, key="x", position=0, adapter_override_id=v.adapter_id
        ),
        lambda a, v, b: a.create_step(
            b.lifecycle_version_id,
            tenant_key=b.tenant,
            key="y",
            position=0,
            adapter_id=v.adapter_id,
        ),
    ],
    "delete_adapter_pool": [lambda a, v, b: a.delete_adapter_pool(v.pool_id, tenant_key=b.tenant)],
    "enroll": [
        lambda a, v, b: a.enroll(
            tenant_key=b.tenant,
            sequence_id=v.sequence_id,
            subscriber_id="s",
            recipient="x@example.com",
        ),
        lambda a, v, b: a.enroll(
            tenant_key=b.tenant,
            sequence_id=b.sequence_id,
            subscriber_id="s",
            recipient="x@example.com",
            sequence_version_id=v.version_id,
        ),
    ],
    "enroll_many": [
        lambda a, v, b: a.enroll_many(
            tenant_key=b.tenant,
            sequence_id=v.sequence_id,
            prospects=[{"subscriber_id": "s", "recipient": "x@example.com"}],
        ),
        lambda a, v, b: a.enroll_many(
            tenant_key=b.tenant,
            sequence_id=b.sequence_id,
            prospects=[{"subscriber_id": "s", "recipient": "x@example.com"}],
            sequence_version_id=v.version_id,
        ),
    ],
    "get_adapter": [lambda a, v, b: a.get_adapter(v.adapter_id, tenant_key=b.tenant)],
    "get_enrollment": [lambda a, v, b: a.get_enrollment(v.enrollment_id, tenant_key=b.tenant)],
    "get_pool": [lambda a, v, b: a.get_pool(v.pool_id, tenant_key=b.tenant)],
    "inspect_pool": [lambda a, v, b: a.inspect_pool(v.pool_id, tenant_key=b.tenant)],
    "list_pool_members": [lambda a, v, b: a.list_pool_members(v.pool_id, tenant_key=b.tenant)],
    "ingest_inbound_message": [
        lambda a, v, b: a.ingest_inbound_message(v.adapter_id, _MSG, tenant_key=b.tenant)
    ],
    "pause_enrollment": [lambda a, v, b: a.pause_enrollment(v.enrollment_id, tenant_key=b.tenant)],
    "resume_enrollment": [
        lambda a, v, b: a.resume_enrollment(v.enrollment_id, tenant_key=b.tenant)
    ],
    "unenroll": [lambda a, v, b: a.unenroll(v.enrollment_id, tenant_key=b.tenant)],
    "repin_enrollment": [
        lambda a, v, b: a.repin_enrollment(
            v.enrollment_id, tenant_key=b.tenant, new_adapter_id=b.adapter_id
        ),
        lambda a, v, b: a.repin_enrollment(
            v.enrollment_id, tenant_key=v.tenant, new_adapter_id=b.adapter_id
        ),
    ],
    "remove_pool_member": [
        lambda a, v, b: a.remove_pool_member(
            v.pool_id, tenant_key=b.tenant, adapter_id=v.adapter_id
        ),
        lambda a, v, b: a.remove_pool_member(
            b.pool_id, tenant_key=b.tenant, adapter_id=v.adapter_id
        ),
    ],
    "set_adapter_health": [
        lambda a, v, b: a.set_adapter_health(
            v.adapter_id, tenant_key=b.tenant, health_state="resting"
        )
    ],
    "update_channel_adapter": [
        lambda a, v, b: a.update_channel_adapter(v.adapter_id, tenant_key=b.tenant, daily_cap=1),
        lambda a, v, b: a.update_channel_adapter(
            v.adapter_id, tenant_key=b.tenant, from_address="me@attacker.example"
        ),
    ],
    "resolve_ambiguous_send": [
        lambda a, v, b: a.resolve_ambiguous_send(v.ambiguous_id, tenant_key=b.tenant, sent=True),
        lambda a, v, b: a.resolve_ambiguous_send(v.ambiguous_id, tenant_key=b.tenant, sent=False),
    ],
    "list_ambiguous_sends": [_no_victim_ambiguous],
    "list_suppressions": [_no_victim_suppressions],
    "iter_suppressions": [_no_victim_suppressions],
}


LISTINGS = {_no_victim_ambiguous, _no_victim_suppressions, _no_victim_throttles}


# ---------------------------------------------------------------- CLI cases

Argv = Callable[[Victim, Attacker], list[str]]


@dataclass(frozen=True)
class Read:
    """A listing as the attacker: exits 0 and prints none of the victim's markers."""

    argv: Argv


def markers(v: Victim) -> set[str]:
    """Strings only the victim's data contains (its ids, its tenant, its addresses)."""
    return {
        v.tenant,
        v.adapter_id,
        v.pool_id,
        v.sequence_id,
        v.version_id,
        v.enrollment_id,
        v.ambiguous_id,
        v.ambiguous_tenant,
        v.from_address,
        v.throttle_id,
        "blocked@victim.example",
    }


CLI_CASES: dict[str, list[Argv | Read]] = {
    "throttle set": [
        lambda v, b: [
            "throttle",
            "set",
            "-t",
            b.tenant,
            "--domain",
            "gmail.com",
            "--adapter",
            v.adapter_id,
            "--per-hour",
            "1",
        ],  # fmt: skip
    ],
    "throttle remove": [lambda v, b: ["throttle", "remove", v.throttle_id, "-t", b.tenant]],
    "throttle list": [Read(lambda v, b: ["throttle", "list", "-t", b.tenant, "--json"])],
    "enroll": [
        lambda v, b: [
            "enroll",
            "-t",
            b.tenant,
            "--sequence",
            v.sequence_id,
            "--subscriber",
            "s",
            "--recipient",
            "x@attacker.example",
        ],
        lambda v, b: [
            "enroll",
            "-t",
            b.tenant,
            "--sequence",
            b.sequence_id,
            "--subscriber",
            "s",
            "--recipient",
            "x@attacker.example",
            "--version",
            v.version_id,
        ],
    ],
    "ingest": [
        lambda v, b: [
            "ingest",
            "-t",
            b.tenant,
            "--adapter",
            v.adapter_id,
            "--message-id",
            "<sweep@attacker.example>",
            "--from",
            "x@attacker.example",
            "--to",
            "y@attacker.example",
        ],
    ],
    "adapter update": [
        lambda v, b: ["adapter", "update", v.adapter_id, "-t", b.tenant, "--daily-cap", "1"]
    ],
    "adapter set-health": [
        lambda v, b: ["adapter", "set-health", v.adapter_id, "-t", b.tenant, "--state", "resting"]
    ],
    "adapter show": [lambda v, b: ["adapter", "show", v.adapter_id, "-t", b.tenant, "--json"]],
    "pool add-member": [
        lambda v, b: ["pool", "add-member", v.pool_id, "-t", b.tenant, "--adapter", b.adapter_id],
        lambda v, b: ["pool", "add-member", b.pool_id, "-t", b.tenant, "--adapter", v.adapter_id],
    ],
    "pool remove-member": [
        lambda v, b: [
            "pool",
            "remove-member",
            v.pool_id,
            "-t",
            b.tenant,
            "--adapter",
            v.adapter_id,
        ],
        lambda v, b: [
            "pool",
            "remove-member",
            b.pool_id,
            "-t",
            b.tenant,
            "--adapter",
            v.adapter_id,
        ],
    ],
    "pool show": [lambda v, b: ["pool", "show", v.pool_id, "-t", b.tenant, "--json"]],
    "pool delete": [lambda v, b: ["pool", "delete", v.pool_id, "-t", b.tenant]],
    "version create": [
        lambda v, b: ["version", "create", v.sequence_id, "-t", b.tenant, "--version", "7"],
        lambda v, b: [
            "version",
            "create",
            b.sequence_id,
            "-t",
            b.tenant,
            "--version",
            "8",
            "--mode",
            "outbound",
            "--pool",
            v.pool_id,
        ],
    ],
    "step create": [
        lambda v, b: [
            "step",
            "create",
            v.version_id,
            "-t",
            b.tenant,
            "--key",
            "x",
            "--position",
            "9",
        ],
        lambda v, b: [
            "step",
            "create",
            b.version_id,
            "-t",
            b.tenant,
            "--key",
            "y",
            "--position",
            "0",
            "--adapter-override",
            v.adapter_id,
        ],
        lambda v, b: [
            "step",
            "create",
            b.lifecycle_version_id,
            "-t",
            b.tenant,
            "--key",
            "z",
            "--position",
            "0",
            "--adapter",
            v.adapter_id,
        ],
    ],
    "enrollment pause": [lambda v, b: ["enrollment", "pause", v.enrollment_id, "-t", b.tenant]],
    "enrollment resume": [lambda v, b: ["enrollment", "resume", v.enrollment_id, "-t", b.tenant]],
    "enrollment unenroll": [
        lambda v, b: ["enrollment", "unenroll", v.enrollment_id, "-t", b.tenant]
    ],
    "enrollment repin": [
        lambda v, b: [
            "enrollment",
            "repin",
            v.enrollment_id,
            "-t",
            b.tenant,
            "--adapter",
            b.adapter_id,
        ],
        lambda v, b: [
            "enrollment",
            "repin",
            v.enrollment_id,
            "-t",
            v.tenant,
            "--adapter",
            b.adapter_id,
        ],
    ],
    "enrollment show": [
        lambda v, b: ["enrollment", "show", v.enrollment_id, "-t", b.tenant, "--json"]
    ],
    "enrollment explain": [
        lambda v, b: ["enrollment", "explain", v.enrollment_id, "-t", b.tenant, "--json"]
    ],
    "sends resolve": [
        lambda v, b: ["sends", "resolve", v.ambiguous_id, "-t", b.tenant, "--sent"],
        lambda v, b: ["sends", "resolve", v.ambiguous_id, "-t", b.tenant, "--not-sent"],
    ],
    "sends ambiguous": [Read(lambda v, b: ["sends", "ambiguous", "-t", b.tenant, "--json"])],
    "audit replay": [Read(lambda v, b: ["audit", "replay", "-t", b.tenant, "--json"])],
    "audit telemetry": [Read(lambda v, b: ["audit", "telemetry", "-t", b.tenant, "--limit", "0"])],
    "suppressions list": [Read(lambda v, b: ["suppressions", "list", "-t", b.tenant, "--json"])],
    "suppressions export": [Read(lambda v, b: ["suppressions", "export", "-t", b.tenant])],
    # An entry is an address of the caller's own list; with a real worker below.
    "suppressions remove": [
        Read(lambda v, b: ["suppressions", "remove", "blocked@victim.example", "-t", b.tenant])
    ],
}


# ---------------------------------------------------------------- API and CLI, no worker


@pytest.fixture
def victim_and_attacker(
    api: DripDrop,
    db_engine: Engine,
    services: Settings,
) -> tuple[Victim, Attacker]:
    ledger = LedgerTenant(services.database_url, config={"host": "127.0.0.1", "port": 1})
    v = _victim(api, db_engine, ledger)
    with ledger.connect() as conn:  # a suppression of the victim's, for the listings
        conn.execute(
            "INSERT INTO dripdrop.suppressions (id, tenant_key, recipient, recipient_normalized,"
            " reason, source) VALUES (%s, %s, %s, %s, 'manual', 'sweep')",
            (str(uuid.uuid4()), v.tenant, "blocked@victim.example", "blocked@victim.example"),
        )
    return v, _attacker(api)


def test_every_api_call_naming_another_tenants_id_is_refused_and_changes_nothing(
    api: DripDrop,
    db_engine: Engine,
    settings: Settings,
    cli: Callable[..., CliResult],  # creates the topics
    victim_and_attacker: tuple[Victim, Attacker],
) -> None:
    v, b = victim_and_attacker
    before, marks = snapshot(db_engine, v.tenant, v.ambiguous_tenant), high_watermarks(settings)
    tried = 0
    for name in sorted(public_methods() - ID_LESS_METHODS):
        for attempt in API_CASES[name]:
            tried += 1
            if attempt in LISTINGS:
                attempt(api, v, b)
                continue
            with pytest.raises(REFUSED) as refused:
                attempt(api, v, b)
            assert v.from_address not in str(refused.value), (name, refused.value)
    assert tried >= len(public_methods() - ID_LESS_METHODS)
    assert snapshot(db_engine, v.tenant, v.ambiguous_tenant) == before
    assert high_watermarks(settings) == marks, "a refused call produced a record"


def test_every_cli_command_naming_another_tenants_id_is_refused_and_prints_none_of_its_data(
    api: DripDrop,
    db_engine: Engine,
    settings: Settings,
    cli: Callable[..., CliResult],
    victim_and_attacker: tuple[Victim, Attacker],
) -> None:
    v, b = victim_and_attacker
    before, marks = snapshot(db_engine, v.tenant, v.ambiguous_tenant), high_watermarks(settings)
    secret = markers(v)
    produced_by_reads = 0
    for path in sorted(cli_commands() - ID_LESS_COMMANDS):
        for case in CLI_CASES[path]:
            argv = case.argv(v, b) if isinstance(case, Read) else case(v, b)
            result = cli(*argv)
            out = result.stdout + result.stderr
            if isinstance(case, Read):
                assert result.exit_code == 0, (argv, out)
                produced_by_reads += argv[:2] == ["suppressions", "remove"]
            else:
                assert result.exit_code in REFUSED_EXITS, (argv, result.exit_code, out)
            # The refusal may echo the id the caller gave; never the victim's other data.
            given = set(argv)
            leaked = {m for m in secret - given if m in out}
            assert not leaked, (argv, leaked, out)
    assert snapshot(db_engine, v.tenant, v.ambiguous_tenant) == before
    after = high_watermarks(settings)
    grew = {k: after[k] - marks.get(k, 0) for k in after if after[k] != marks.get(k, 0)}
    # The attacker's own unsuppress record is the only one (its own list, one record).
    assert sum(grew.values()) == produced_by_reads, grew
    assert all(name.endswith("health-signals") for name, _ in grew), grew


# ---------------------------------------------------------------- input records, a worker

BLOCKED = "blocked@victim.example"


def _base(topic: str, tenant: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "tenant_key": tenant, "occurred_at": datetime.now(UTC)}


def _command(tenant: str, command: str, enrollment_id: str, **fields: Any) -> dict[str, Any]:
    record = {
        **_base("enrollments", tenant),
        "command": command,
        "enrollment_id": enrollment_id,
        "sequence_id": None,
        "sequence_version_id": None,
        "subscriber_id": None,
        "recipient": None,
        "recipient_timezone": None,
        "data": "{}",
        "new_adapter_id": None,
        "reason": None,
    }
    return {**record, **fields}


def _signal(tenant: str, kind: str, **fields: Any) -> dict[str, Any]:
    record = {
        **_base("health-signals", tenant),
        "kind": kind,
        "adapter_id": None,
        "provider_message_id": None,
        "message_id": None,
        "recipient": None,
        "health_state": None,
        "resting_until": None,
        "score": None,
        "source": "sweep",
        "bounce_type": None,
        "reason": None,
        "enrollment_id": None,
    }
    return {**record, **fields}


def _config(tenant: str, entity_type: str, entity_id: str, payload: Any) -> dict[str, Any]:
    return {
        **_base("config", tenant),
        "entity_type": entity_type,
        "entity_id": entity_id,
        "deleted": payload is None,
        "payload": None if payload is None else json.dumps(payload, default=str),
    }


def hostile_records(
    a: World, b: World, enrollment_id: str, message_id: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, topic, record): the attacker's records naming the victim's ids, and the
    victim's own records naming the attacker's. Every one must be dead-lettered, but for
    ``IGNORED`` ones, which act on the attacker's own state only."""
    adapter = a.adapters[0].model_dump(mode="json")
    seq = {"sequence_id": a.sequence.id, "subscriber_id": "x", "recipient": "x@attacker.example"}
    return [
        (
            "enroll into the victim's sequence",
            "enrollments",
            _command(b.tenant, "enroll", str(uuid.uuid4()), **seq),
        ),
        (
            "enroll with the victim's version",
            "enrollments",
            _command(
                b.tenant,
                "enroll",
                str(uuid.uuid4()),
                **{**seq, "sequence_id": b.sequence.id, "sequence_version_id": a.version.id},
            ),
        ),
        (
            "pause the victim's enrollment",
            "enrollments",
            _command(b.tenant, "pause", enrollment_id),
        ),
        (
            "resume the victim's enrollment",
            "enrollments",
            _command(b.tenant, "resume", enrollment_id),
        ),
        (
            "unenroll the victim's enrollment",
            "enrollments",
            _command(b.tenant, "unenroll", enrollment_id),
        ),
        (
            "repin the victim's enrollment",
            "enrollments",
            _command(b.tenant, "repin", enrollment_id, new_adapter_id=b.adapters[0].id),
        ),
        (
            "victim repinned to the attacker's adapter",
            "enrollments",
            _command(a.tenant, "repin", enrollment_id, new_adapter_id=b.adapters[0].id),
        ),
        (
            "reply through the victim's adapter",
            "inbound-messages",
            inbound_record(b.tenant, a.adapters[0].id, "reply", message_id),
        ),
        (
            "reply to the victim's Message-ID",
            "inbound-messages",
            inbound_record(b.tenant, b.adapters[0].id, "reply", message_id),
        ),
        (
            "set the victim's adapter health",
            "health-signals",
            _signal(b.tenant, "set_health", adapter_id=a.adapters[0].id, health_state="resting"),
        ),
        (
            "complaint on the victim's adapter",
            "health-signals",
            _signal(b.tenant, "complaint", adapter_id=a.adapters[0].id, message_id=message_id),
        ),
        (
            "bounce of the victim's Message-ID",
            "health-signals",
            _signal(b.tenant, "bounce", message_id=message_id, bounce_type="hard"),
        ),
        (
            "unsubscribe the victim's enrollment",
            "health-signals",
            _signal(
                b.tenant,
                "unsubscribe",
                enrollment_id=enrollment_id,
                recipient=f"v1@{a.tenant}.example",
            ),
        ),
        (
            "unsuppress the victim's entry",
            "health-signals",
            _signal(b.tenant, "unsuppress", recipient=BLOCKED),
        ),
        (
            "overwrite the victim's adapter",
            "config",
            _config(
                b.tenant,
                "adapter",
                a.adapters[0].id,
                {**adapter, "tenant_key": b.tenant, "from_address": "me@attacker.example"},
            ),
        ),
        (
            "delete the victim's adapter",
            "config",
            _config(b.tenant, "adapter", a.adapters[0].id, None),
        ),
        (
            "the attacker's adapter into the victim's pool",
            "config",
            _config(
                b.tenant,
                "pool_member",
                f"{a.pool.id}:{b.adapters[0].id}",
                {
                    "pool_id": a.pool.id,
                    "adapter_id": b.adapters[0].id,
                    "tenant_key": b.tenant,
                    "member_class": "mailbox",
                    "weight": 100,
                    "active": True,
                },
            ),
        ),
        ("delete the victim's step", "config", _config(b.tenant, "step", a.steps[0].id, None)),
    ]


IGNORED = {
    # The attacker's own suppression list and its own unmatched reply: nothing of the
    # victim's is named by what the processor keys them on (tenant + message id / entry).
    "reply to the victim's Message-ID": "ingest.unmatched",
    "unsuppress the victim's entry": "policy.unsuppressed",  # the attacker's own entry
}


TRIED = HOST_INPUTS
"""The input topics swept in ``make test``: all four. A ``config`` record naming another
tenant's entity (to overwrite, delete or point at) is refused by
``dripdrop_core.config_sync.config_ownership_error`` and dead-lettered ``tenant_mismatch``."""


@pytest.mark.timeout(600)
def test_input_records_naming_another_tenants_ids_are_dead_lettered_and_change_nothing(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
    db_engine: Engine,
    cli: Callable[..., CliResult],
) -> None:
    sweep_inputs(settings, topics, smtp, worker_factory, db_engine, cli, TRIED)


def sweep_inputs(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
    db_engine: Engine,
    cli: Callable[..., CliResult],
    tried: tuple[str, ...],
) -> None:
    """The victim sends once and has a suppression; the attacker (who suppressed the same
    address on its own list) sends the hostile records of ``tried`` topics; then every one
    was dead-lettered or acted on the attacker's own state only, the victim's rows are the
    same, it still sends through its own mailbox, and no read path shows it to the attacker."""
    topics()
    run = settings.model_copy(update={"tick_interval_seconds": 0.1})
    codecs = Codecs(run)
    tag = uuid.uuid4().hex[:6]
    kafka = producer(run)

    def produce(topic: str, tenant: str, record: dict[str, Any]) -> tuple[int, int]:
        placed: list[tuple[int | None, int | None]] = []
        kafka.produce(
            run.topic(topic),
            key=tenant.encode(),
            value=codecs.for_topic(topic).encode(record),
            partition=partition_for(victim.tenant, run.partitions),
            on_delivery=lambda err, msg: placed.append((msg.partition(), msg.offset())),
        )
        assert kafka.flush(30) == 0 and placed
        partition, offset = placed[0]
        assert partition is not None and offset is not None, placed
        return partition, offset

    with DripDrop(run) as dd:
        victim = build_world(dd, smtp, tenant=f"victim-{tag}", caps=(100,), steps=1)
        attacker = build_world(dd, smtp, tenant=f"attacker-{tag}", caps=(100,), steps=1)
        worker = worker_factory(run)
        wait_ready(worker)
        enrollment_id = dd.enroll(
            tenant_key=victim.tenant,
            sequence_id=victim.sequence.id,
            subscriber_id="v-1",
            recipient=f"v1@{victim.tenant}.example",
            data={"first_name": "V"},
        ).enrollment_id
        assert enrollment_id
        for tenant in (victim.tenant, attacker.tenant):  # the same entry on both lists
            produce("health-signals", tenant, _signal(tenant, "suppress", recipient=BLOCKED))

        def settled() -> str | None:
            assert worker.alive(), worker.log_tail()
            found = rows(
                run,
                "SELECT x.out_message_id FROM dripdrop.step_executions x"
                " JOIN dripdrop.enrollments e ON e.id = x.enrollment_id"
                " WHERE e.id = %s AND x.status = 'sent'"
                " AND e.state = 'completed' AND EXISTS (SELECT 1 FROM dripdrop.suppressions s"
                "  WHERE s.tenant_key = e.tenant_key AND s.recipient_normalized = %s)"
                " AND EXISTS (SELECT 1 FROM dripdrop.suppressions s"
                "  WHERE s.tenant_key = %s AND s.recipient_normalized = %s)",
                enrollment_id,
                BLOCKED,
                attacker.tenant,
                BLOCKED,
            )
            return str(found[0][0]) if found else None

        message_id = wait_for(settled, timeout=120, interval=0.3, what="the victim's send")
        before = snapshot(db_engine, victim.tenant)

        reader = TopicReader(run, "dead-letter")
        telemetry = TopicReader(run, "telemetry")
        try:
            placed = {
                name: (topic, produce(topic, record["tenant_key"], record))
                for name, topic, record in hostile_records(
                    victim, attacker, enrollment_id, message_id
                )
                if topic in tried
            }

            def lettered() -> dict[str, str] | None:
                assert worker.alive(), worker.log_tail()
                letters = {
                    (
                        r["source_topic"].removeprefix(run.topic_prefix),
                        r["partition"],
                        r["offset"],
                    ): r
                    for r in reader.poll(0.5)
                }
                names = {
                    t["name"] for t in telemetry.poll(0.2) if t["tenant_key"] == attacker.tenant
                }
                found = {
                    name: letters[(topic, *at)]["reason"]
                    for name, (topic, at) in placed.items()
                    if (topic, *at) in letters
                }
                ignored = {
                    name: f"ignored ({event})"
                    for name, event in IGNORED.items()
                    if name not in found and event in names
                }
                done = {**found, **ignored}
                progress.update(done)
                return done if set(done) == set(placed) else None

            progress: dict[str, str] = {}
            try:
                outcome = wait_for(
                    lettered, timeout=120, interval=0.0, what="every hostile record's fate"
                )
            except AssertionError:
                left = sorted(set(placed) - set(progress))
                raise AssertionError(
                    f"neither dead-lettered nor ignored: {left}; {progress}"
                ) from None
        finally:
            reader.close()
            telemetry.close()
        print("\n".join(f"{name}: {reason}" for name, reason in sorted(outcome.items())))
        assert all(outcome.values())
        assert snapshot(db_engine, victim.tenant) == before, "the victim's rows changed"

        # Its config is intact: a new enrollment is pinned to its own mailbox and sent from it.
        probe = dd.enroll(
            tenant_key=victim.tenant,
            sequence_id=victim.sequence.id,
            subscriber_id="v-2",
            recipient=f"v2@{victim.tenant}.example",
            data={"first_name": "W"},
        ).enrollment_id

        def probed() -> bool:
            assert worker.alive(), worker.log_tail()
            return any(m.rcpt_tos == (f"v2@{victim.tenant}.example",) for m in smtp.messages)

        wait_for(probed, timeout=120, interval=0.3, what="the victim's second send")
        [sent] = [m for m in smtp.messages if m.rcpt_tos == (f"v2@{victim.tenant}.example",)]
        assert sent.mail_from == victim.adapters[0].from_address
        assert rows(
            run, "SELECT adapter_id::text FROM dripdrop.enrollments WHERE id = %s", probe
        ) == [(victim.adapters[0].id,)]

    # Read paths across tenants, on real processed data.
    secret = {
        victim.tenant,
        victim.adapters[0].id,
        victim.pool.id,
        enrollment_id,
        message_id,
        victim.adapters[0].from_address or "",
        f"v1@{victim.tenant}.example",
    }
    for argv in (
        ["enrollment", "show", enrollment_id, "-t", attacker.tenant, "--json"],
        ["enrollment", "explain", enrollment_id, "-t", attacker.tenant, "--json"],
        ["adapter", "show", victim.adapters[0].id, "-t", attacker.tenant, "--json"],
        ["pool", "show", victim.pool.id, "-t", attacker.tenant, "--json"],
    ):
        result = cli(*argv)
        assert result.exit_code in REFUSED_EXITS, (argv, result.stdout, result.stderr)
        out = result.stdout + result.stderr
        assert not {m for m in secret - set(argv) if m in out}, (argv, out)
    for argv in (
        ["audit", "replay", "-t", attacker.tenant, "--json"],
        ["audit", "telemetry", "-t", attacker.tenant, "--limit", "0"],
        ["sends", "ambiguous", "-t", attacker.tenant, "--json"],
    ):
        result = cli(*argv)
        assert result.exit_code == 0, (argv, result.stdout, result.stderr)
        out = result.stdout + result.stderr
        assert not {m for m in secret if m in out}, (argv, out)
    audited = json.loads(cli("audit", "replay", "-t", victim.tenant, "--json").stdout)
    assert audited["ok"] and audited["sends"] == 2, audited  # the victim's own audit: its 2 sends

"""Alembic: upgrade, downgrade, upgrade again and ``alembic check`` on a database of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from streams.db.tables import metadata
from streams.settings import Settings
from tests.integration._api_fixtures import alembic_config

SEED_QUERY = (
    "SELECT step_id, out_message_id, payload->'headers' FROM dripdrop.step_executions "
    "WHERE enrollment_id = :enrollment_id ORDER BY inserted_at;"
)


@pytest.fixture
def migtest_url(services: Settings) -> Iterator[str]:
    """A fresh, empty database (``dripdrop_migtest_<hex>``), dropped afterwards."""
    name = f"dripdrop_migtest_{uuid.uuid4().hex[:8]}"
    admin = create_engine(services.sqlalchemy_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(services.sqlalchemy_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema="dripdrop"))
    finally:
        engine.dispose()


def test_migrations_cycle_from_empty_matches_metadata(migtest_url: str) -> None:
    config = alembic_config(migtest_url)
    expected = {table.name for table in metadata.sorted_tables}

    command.upgrade(config, "head")
    assert _tables(migtest_url) >= expected
    command.check(config)  # raises if models and migrations drifted

    command.downgrade(config, "base")
    assert _tables(migtest_url) == {"alembic_version"}

    command.upgrade(config, "head")
    assert _tables(migtest_url) - {"alembic_version"} == expected
    command.check(config)


def test_migrations_seed_threading_query_runs_verbatim(migtest_url: str) -> None:
    command.upgrade(alembic_config(migtest_url), "head")
    engine = create_engine(migtest_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(SEED_QUERY), {"enrollment_id": str(uuid.uuid4())}).all()
    finally:
        engine.dispose()
    assert rows == []


def test_migrations_constraint_names_follow_convention(migtest_url: str) -> None:
    command.upgrade(alembic_config(migtest_url), "head")
    engine = create_engine(migtest_url)
    try:
        with engine.connect() as conn:
            names = conn.execute(
                text(
                    "SELECT conname, contype FROM pg_constraint c "
                    "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'dripdrop' "
                    "AND conrelid <> 'dripdrop.alembic_version'::regclass"
                )
            ).all()
    finally:
        engine.dispose()
    prefixes = {"p": "pk_", "u": "uq_", "c": "ck_", "f": "fk_"}
    wrong = [name for name, kind in names if not name.startswith(prefixes[kind])]
    assert names and wrong == []


def test_migrations_cli_db_upgrade_creates_schema(services: Settings, migtest_url: str) -> None:
    from tests.integration._api_fixtures import run_cli

    plain_url = migtest_url.replace("postgresql+psycopg://", "postgresql://", 1)
    result = run_cli(services.model_copy(update={"database_url": plain_url}), "db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert "outbox" in _tables(migtest_url)


def test_migration_0006_stores_out_message_ids_without_brackets(migtest_url: str) -> None:
    """Rows written before 0006 carry the wire form; after it, the form inbound ids are
    matched in (SPEC §8); the downgrade puts the brackets back."""
    from tests.integration.ledger_rows import LedgerTenant

    config = alembic_config(migtest_url)
    command.upgrade(config, "0005_inbound_api_cursors")
    ledger = LedgerTenant(migtest_url.replace("postgresql+psycopg://", "postgresql://", 1))
    sent = ledger.command()
    execution = sent["step_execution_id"]
    wire = sent["headers"]["Message-ID"]
    with ledger.connect() as conn:  # as a sink before 0006 wrote it
        conn.execute(
            "UPDATE dripdrop.step_executions SET out_message_id = %s WHERE id = %s",
            (wire, execution),
        )

    def stored() -> tuple[str, str]:
        with ledger.connect() as conn:
            row = conn.execute(
                "SELECT out_message_id, payload->'headers'->>'Message-ID'"
                " FROM dripdrop.step_executions WHERE id = %s",
                (execution,),
            ).fetchone()
        assert row is not None
        return row[0], row[1]

    command.upgrade(config, "head")
    assert stored() == (wire.strip("<>"), wire)
    command.downgrade(config, "0005_inbound_api_cursors")
    assert stored() == (wire, wire)

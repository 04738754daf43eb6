"""Alembic environment: metadata from ``streams.db.tables``, URL from ``Settings``.

A caller may override the URL with ``config.set_main_option("sqlalchemy.url", ...)``
(the migration tests do, to use a database of their own).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from streams.db.tables import SCHEMA, metadata
from streams.settings import Settings

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url


def _include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Compare only schema ``dripdrop`` (the default schema holds nothing of ours)."""
    return type_ != "schema" or name == SCHEMA


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=metadata,
        include_schemas=True,
        include_name=_include_name,
        version_table_schema=SCHEMA,
        compare_type=True,
        compare_server_default=False,
    )


def run_migrations_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A role named "dripdrop" would make schema dripdrop the default one ("$user"
    # in search_path) and autogenerate would then compare it as schema None.
    # Pin the session's search_path so schemas are always compared by name.
    engine = create_engine(_url(), connect_args={"options": "-c search_path=public"})
    try:
        with engine.connect() as connection:
            # The version table lives in the schema, so the schema must exist first.
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            connection.commit()
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

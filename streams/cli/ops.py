"""``dripdrop outbox relay`` and ``dripdrop db upgrade``: operator plumbing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from alembic import command
from alembic.config import Config

from streams.cli.output import JsonOut, client, emit, handled
from streams.settings import Settings

outbox_app = typer.Typer(help="The transactional outbox of config changes.")
db_app = typer.Typer(help="The PostgreSQL schema (Alembic).")

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


@outbox_app.command("relay")
@handled
def relay(json_out: JsonOut = False) -> None:
    """Publish unpublished outbox rows of this topic prefix (safe any time, concurrently)."""
    with client() as dd:
        published = dd.relay_outbox()
        pending = dd.pending_outbox()
    emit({"published": published, "pending": pending}, as_json=json_out, title="outbox")


@outbox_app.command("pending")
@handled
def pending(json_out: JsonOut = False) -> None:
    """Count unpublished outbox rows."""
    with client() as dd:
        count = dd.pending_outbox()
    emit({"pending": count}, as_json=json_out, title="outbox")


def alembic_config(settings: Settings) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return config


@db_app.command("upgrade")
@handled
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate schema dripdrop to a revision (default: head)."""
    command.upgrade(alembic_config(Settings()), revision)
    typer.echo(f"database at {revision}")


topics_app = typer.Typer(help="The Kafka topics (created explicitly: auto-creation stays off).")


@topics_app.command("create")
@handled
def create(json_out: JsonOut = False) -> None:
    """Create every public and internal topic of the prefix that does not exist yet."""
    from streams.admin import create_topics

    settings = Settings()
    created = create_topics(settings)
    emit(
        {"created": created, "partitions": settings.partitions, "prefix": settings.topic_prefix},
        as_json=json_out,
        title="topics",
    )

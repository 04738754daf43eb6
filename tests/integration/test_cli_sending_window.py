"""A step's sending window through the CLI into PostgreSQL and back (SPEC §13): the options
``--window-start`` / ``--window-end`` give the hours the step MAY send."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select

from streams.db.authoring import step_from_row
from streams.db.tables import steps
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import CliResult

Cli = Callable[..., CliResult]


def _json(result: CliResult) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_cli_step_window_22_7_is_stored_and_read_back_as_a_night_window(
    cli: Cli, db_engine: Engine
) -> None:
    t = ("--tenant", f"acct_{uuid.uuid4().hex[:12]}")
    adapter = _json(cli("adapter", "create", *t, "--name", "m", "--json"))
    sequence = _json(cli("sequence", "create", *t, "--key", "night", "--json"))
    version = _json(cli("version", "create", sequence["id"], *t, "--version", "1", "--json"))
    made: dict[str, dict[str, Any]] = {}
    for key, options in (
        ("night", ("--window-start", "22", "--window-end", "7")),
        ("morning", ("--window-start", "9")),
        ("any", ()),
    ):
        made[key] = _json(
            cli(
                "step",
                "create",
                version["id"],
                *t,
                "--key",
                key,
                "--position",
                str(len(made)),
                "--adapter",
                adapter["id"],
                *options,
                "--json",
            )
        )
    assert made["night"]["sending_window"] == {"start_hour": 22, "end_hour": 7}
    assert made["morning"]["sending_window"] == {"start_hour": 9, "end_hour": 21}
    assert made["any"]["sending_window"] is None
    with db_engine.connect() as conn:
        for key, step in made.items():
            row = conn.execute(select(steps).where(steps.c.id == step["id"])).one()
            stored = step_from_row(row).sending_window
            assert (stored.model_dump() if stored else None) == step["sending_window"], key

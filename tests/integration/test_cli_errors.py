"""CLI validation errors: exit codes, one clear stderr line, no traceback (SPEC §4, §5.1)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from streams.cli.main import app
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import CliResult, insert_enrollment, run_cli

Cli = Callable[..., CliResult]
MISSING = "00000000-0000-4000-8000-000000000000"


def _one_error_line(result: CliResult, code: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error [{code}]: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def _json(result: CliResult) -> dict[str, str]:
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def tenant() -> str:
    return f"acct_{uuid.uuid4().hex[:12]}"


def test_cli_add_esp_as_mailbox_is_class_mismatch_exit_5(cli: Cli, tenant: str) -> None:
    ses = _json(
        cli("adapter", "create", "--tenant", tenant, "--name", "ses", "--provider", "ses", "--json")
    )
    pool = _json(cli("pool", "create", "--tenant", tenant, "--name", "p", "--json"))
    result = cli("pool", "add-member", pool["id"], "--tenant", tenant, "--adapter", ses["id"])
    assert result.exit_code == 5
    _one_error_line(result, "class_mismatch")


def test_cli_other_tenants_rows_exit_4(cli: Cli, tenant: str) -> None:
    other = f"acct_{uuid.uuid4().hex[:12]}"
    adapter = _json(cli("adapter", "create", "--tenant", other, "--name", "g", "--json"))
    pool = _json(cli("pool", "create", "--tenant", tenant, "--name", "p", "--json"))
    for args in (
        ("pool", "add-member", pool["id"], "--tenant", tenant, "--adapter", adapter["id"]),
        ("pool", "show", pool["id"], "--tenant", other),
        ("adapter", "show", adapter["id"], "--tenant", tenant),
        ("adapter", "set-health", adapter["id"], "--tenant", tenant, "--state", "resting"),
        (
            "ingest",
            "--tenant",
            tenant,
            "--adapter",
            adapter["id"],
            "--message-id",
            "<m@x.io>",
            "--from",
            "a@x.io",
            "--to",
            "b@x.io",
        ),
    ):
        result = cli(*args)
        assert result.exit_code == 4, (args, result.stderr)
        _one_error_line(result, "tenant_mismatch")


def test_cli_unknown_ids_exit_3(cli: Cli, tenant: str) -> None:
    for args, code in (
        (("pool", "show", MISSING, "--tenant", tenant), "unknown_pool"),
        (("adapter", "show", MISSING, "--tenant", tenant), "unknown_adapter"),
        (("enrollment", "pause", MISSING, "--tenant", tenant), "not_found"),
        (("version", "create", MISSING, "--tenant", tenant, "--version", "1"), "not_found"),
    ):
        result = cli(*args)
        assert result.exit_code == 3, (args, result.stderr)
        _one_error_line(result, code)


def test_cli_invalid_values_exit_5(cli: Cli, tenant: str) -> None:
    adapter = _json(cli("adapter", "create", "--tenant", tenant, "--name", "g", "--json"))
    pool = _json(cli("pool", "create", "--tenant", tenant, "--name", "p", "--json"))
    sequence = _json(cli("sequence", "create", "--tenant", tenant, "--key", "s", "--json"))
    for args, code in (
        (("adapter", "update", adapter["id"], "--tenant", tenant, "--daily-cap", "0"), "input"),
        (
            (
                "pool",
                "add-member",
                pool["id"],
                "--tenant",
                tenant,
                "--adapter",
                adapter["id"],
                "--weight",
                "0",
            ),
            "input",
        ),
        (
            (
                "version",
                "create",
                sequence["id"],
                "--tenant",
                tenant,
                "--version",
                "1",
                "--mode",
                "outbound",
            ),
            "input",
        ),
        (("pool", "create", "--tenant", tenant, "--name", "p"), "conflict"),
        (
            (
                "enroll",
                "--tenant",
                tenant,
                "--sequence",
                sequence["id"],
                "--subscriber",
                "s",
                "--recipient",
                "nobody",
            ),
            "input",
        ),
        (
            (
                "ingest",
                "--tenant",
                tenant,
                "--adapter",
                adapter["id"],
                "--message-id",
                "<m@x.io>",
                "--from",
                "a@x.io",
                "--to",
                "b@x.io",
                "--intent",
                "maybe",
            ),
            "unknown_intent",
        ),
    ):
        result = cli(*args)
        assert result.exit_code == 5, (args, result.stderr)
        _one_error_line(result, code)


def test_cli_usage_errors_exit_2(cli: Cli, tenant: str) -> None:
    assert cli("pool", "create", "--name", "p").exit_code == 2  # --tenant missing
    assert (
        cli(
            "pool", "create", "--tenant", tenant, "--name", "p", "--on-pin-unavailable", "drop"
        ).exit_code
        == 2
    )
    assert (
        cli(
            "adapter", "create", "--tenant", tenant, "--name", "a", "--ramp-started-at", "yesterday"
        ).exit_code
        == 2
    )


def test_cli_repin_not_member_exit_5_and_success(
    cli: Cli, settings: Settings, db_engine: Engine, tenant: str
) -> None:
    a1 = _json(
        cli(
            "adapter", "create", "--tenant", tenant, "--name", "a1", "--provider", "gmail", "--json"
        )
    )
    a2 = _json(
        cli(
            "adapter", "create", "--tenant", tenant, "--name", "a2", "--provider", "gmail", "--json"
        )
    )
    pool = _json(cli("pool", "create", "--tenant", tenant, "--name", "p", "--json"))
    cli("pool", "add-member", pool["id"], "--tenant", tenant, "--adapter", a1["id"])
    sequence = _json(cli("sequence", "create", "--tenant", tenant, "--key", "s", "--json"))
    version = _json(
        cli(
            "version",
            "create",
            sequence["id"],
            "--tenant",
            tenant,
            "--version",
            "1",
            "--mode",
            "outbound",
            "--pool",
            pool["id"],
            "--json",
        )
    )
    enrollment = insert_enrollment(
        db_engine,
        tenant_key=tenant,
        sequence_id=sequence["id"],
        version_id=version["id"],
        adapter_id=a1["id"],
    )
    refused = cli("enrollment", "repin", enrollment, "--tenant", tenant, "--adapter", a2["id"])
    assert refused.exit_code == 5
    _one_error_line(refused, "conflict")
    cli("pool", "add-member", pool["id"], "--tenant", tenant, "--adapter", a2["id"])
    accepted = _json(
        cli("enrollment", "repin", enrollment, "--tenant", tenant, "--adapter", a2["id"], "--json")
    )
    assert accepted["command"] == "repin"


def test_cli_subprocess_errors_are_one_line_with_exit_codes(
    settings: Settings, tenant: str
) -> None:
    from streams.admin import create_topics

    create_topics(settings)
    not_found = run_cli(settings, "pool", "show", MISSING, "--tenant", tenant)
    assert not_found.exit_code == 3
    _one_error_line(not_found, "unknown_pool")
    ses = json.loads(
        run_cli(
            settings,
            "adapter",
            "create",
            "--tenant",
            tenant,
            "--name",
            "ses",
            "--provider",
            "ses",
            "--json",
        ).stdout
    )
    pool = json.loads(
        run_cli(settings, "pool", "create", "--tenant", tenant, "--name", "p", "--json").stdout
    )
    mismatch = run_cli(
        settings,
        "pool",
        "add-member",
        pool["id"],
        "--tenant",
        tenant,
        "--adapter",
        ses["id"],
        "--class",
        "mailbox",
    )
    assert mismatch.exit_code == 5
    _one_error_line(mismatch, "class_mismatch")
    other = run_cli(settings, "adapter", "show", ses["id"], "--tenant", "someone_else")
    assert other.exit_code == 4
    _one_error_line(other, "tenant_mismatch")
    usage = run_cli(settings, "pool", "create", "--tenant", tenant)
    assert usage.exit_code == 2


def test_cli_database_unreachable_is_one_line_exit_1(settings: Settings, tenant: str) -> None:
    down = settings.model_copy(update={"database_url": "postgresql://dripdrop@127.0.0.1:1/none"})
    result = run_cli(down, "pool", "show", MISSING, "--tenant", tenant)
    assert result.exit_code == 1
    _one_error_line(result, "database")


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    click_group = typer.main.get_command(app) if not prefix else group
    found: list[tuple[str, ...]] = []
    for name, command in getattr(click_group, "commands", {}).items():
        path = (*prefix, name)
        found.append(path)
        found.extend(_commands(command, path))
    return found


def test_cli_every_command_has_help(cli: Cli) -> None:
    paths = _commands(app)
    assert ("adapter", "set-health") in paths and ("outbox", "relay") in paths
    assert ("enrollment", "repin") in paths and ("db", "upgrade") in paths
    for path in [(), *paths]:
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "Usage" in result.stdout

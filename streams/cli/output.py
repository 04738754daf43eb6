"""What every CLI command shares: the client, output (human or ``--json``), exit codes.

Exit codes: 0 ok, 2 usage (Typer/Click), 3 not found, 4 tenant mismatch,
5 conflict or invalid input, 1 anything else (database or broker unreachable,
unexpected errors). User errors are printed as one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from dripdrop_core.errors import DripDropError, InputError, NotFoundError, TenantMismatchError
from streams.api import DripDrop
from streams.kafka import PublishError
from streams.settings import Settings

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TENANT_MISMATCH = 4
EXIT_INVALID = 5

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant key that owns the rows.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

P = ParamSpec("P")
R = TypeVar("R")

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_out = Console(highlight=False, soft_wrap=True)


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, TenantMismatchError):
        return EXIT_TENANT_MISMATCH
    if isinstance(exc, InputError):
        return EXIT_INVALID
    return EXIT_UNEXPECTED


def handled(command: Callable[P, R]) -> Callable[P, R]:
    """Turn typed errors into one stderr line and an exit code (see the module docstring)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DripDropError as exc:
            _err.print(f"error [{exc.code}]: {exc}", markup=False)
            raise typer.Exit(exit_code_for(exc)) from None
        except PublishError as exc:
            _err.print(f"error [kafka]: {exc}", markup=False)
            raise typer.Exit(EXIT_UNEXPECTED) from None
        except SQLAlchemyError as exc:
            origin = getattr(exc, "orig", None) or exc
            first = (str(origin).splitlines() or [type(exc).__name__])[0]
            _err.print(f"error [database]: {first}", markup=False)
            raise typer.Exit(EXIT_UNEXPECTED) from None

    return wrapper


@contextmanager
def client() -> Iterator[DripDrop]:
    """A ``DripDrop`` client from the environment (``DRIPDROP_*``), closed afterwards."""
    with DripDrop(Settings()) as dd:
        yield dd


def parse_time(value: str | None, name: str) -> datetime | None:
    """ISO 8601 (``Z`` allowed) or ``now``; a time without offset is taken as UTC."""
    if value is None:
        return None
    if value.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=name) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_json_object(value: str | None, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc.msg}", param_hint=name) from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=name)
    return parsed


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def emit(value: Any, *, as_json: bool, title: str | None = None) -> None:
    """Print a model, a list of models or a dict: JSON on ``--json``, else a table."""
    data = _plain(value)
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    if isinstance(data, list):
        if not data:
            _out.print(f"(no {title or 'rows'})")
            return
        table = Table(title=title)
        columns = list(data[0])
        for column in columns:
            table.add_column(column)
        for row in data:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        _out.print(table)
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, item in data.items():
        table.add_row(key, _cell(item))
    _out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)

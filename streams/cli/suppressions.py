"""``dripdrop suppressions add | import | remove | list | export`` (SPEC §4, §7).

An entry is an address (``someone@example.com``) or a whole domain (``example.com`` or
``@example.com``). Changes go to the worker through ``health-signals``; ``list`` and
``export`` read the rows it has written (see ``streams/suppressions.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dripdrop_core.suppression import SUPPRESSION_REASONS
from streams.cli.output import JsonOut, Tenant, client, emit, handled
from streams.suppressions import read_csv, write_csv

app = typer.Typer(help="Suppression lists: addresses and domains that never receive mail.")

_err = Console(stderr=True, highlight=False, soft_wrap=True)

Reason = Annotated[str, typer.Option("--reason", help=f"One of {', '.join(SUPPRESSION_REASONS)}.")]
Kind = Annotated[
    str | None, typer.Option("--kind", help="Only 'address' or only 'domain' entries.")
]


def _kind(value: str | None) -> Literal["address", "domain"] | None:
    if value is None:
        return None
    if value not in ("address", "domain"):
        raise typer.BadParameter("must be 'address' or 'domain'", param_hint="--kind")
    return "address" if value == "address" else "domain"


@app.command("add")
@handled
def add(
    entries: Annotated[list[str], typer.Argument(help="Addresses or domains.")],
    tenant: Tenant,
    reason: Reason = "manual",
    source: Annotated[str, typer.Option(help="Who or what asked (free text).")] = "cli",
    json_out: JsonOut = False,
) -> None:
    """Suppress addresses or whole domains in the tenant (refused at enroll, skipped at send)."""
    with client() as dd:
        accepted = [
            dd.add_suppression(e, tenant_key=tenant, reason=reason, source=source) for e in entries
        ]
    emit(accepted, as_json=json_out, title="suppressed")


@app.command("remove")
@handled
def remove(
    entries: Annotated[list[str], typer.Argument(help="Addresses or domains.")],
    tenant: Tenant,
    json_out: JsonOut = False,
) -> None:
    """Take entries off the tenant's list; enrollments made afterwards may send again."""
    with client() as dd:
        accepted = [dd.remove_suppression(e, tenant_key=tenant) for e in entries]
    emit(accepted, as_json=json_out, title="unsuppressed")


@app.command("import")
@handled
def import_(
    file: Annotated[
        Path,
        typer.Argument(help="CSV: entry[,reason[,source]] with or without a header; - = stdin."),
    ],
    tenant: Tenant,
    reason: Reason = "manual",
    source: Annotated[
        str | None, typer.Option(help="Default source (default: import:<file name>).")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Import a CSV list; invalid lines are reported (exit 5) and the rest imported."""
    stream = sys.stdin if str(file) == "-" else file.open(encoding="utf-8-sig", newline="")
    total = None if str(file) == "-" else _count_lines(file)
    show_bar = not json_out and sys.stderr.isatty()
    with (
        stream,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            TextColumn("{task.completed:,} / {task.total:,}" if total else "{task.completed:,}"),
            TimeElapsedColumn(),
            console=_err,
            disable=not show_bar,
        ) as bar,
        client() as dd,
    ):
        task = bar.add_task("rows", total=total)
        result = dd.import_suppressions(
            read_csv(stream),
            tenant_key=tenant,
            reason=reason,
            source=source or f"import:{file.name or 'stdin'}",
            progress=lambda done: bar.update(task, completed=done),
        )
    emit(
        {
            "accepted": result.accepted,
            "invalid": len(result.invalid),
            "first_invalid": [f"line {line}: {why}" for line, why in result.invalid[:10]],
        },
        as_json=json_out,
        title="import",
    )
    if result.invalid:
        raise typer.Exit(5)


def _count_lines(file: Path) -> int:
    with file.open("rb") as f:
        return max(sum(1 for _ in f) - 1, 1)


@app.command("list")
@handled
def list_(
    tenant: Tenant,
    kind: Kind = None,
    json_out: JsonOut = False,
) -> None:
    """The tenant's entries, oldest first."""
    with client() as dd:
        found = dd.list_suppressions(tenant_key=tenant, kind=_kind(kind))
    emit(
        [
            {
                "entry": s.entry,
                "kind": s.kind,
                "reason": s.reason,
                "source": s.source,
                "since": s.inserted_at.isoformat(),
            }
            for s in found
        ],
        as_json=json_out,
        title="suppressions",
    )


@app.command("export")
@handled
def export(
    tenant: Tenant,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="CSV file to write; - = stdout.")
    ] = Path("-"),
    kind: Kind = None,
) -> None:
    """Write the tenant's list as CSV (entry,reason,source,inserted_at): importable again."""
    with client() as dd:
        entries = dd.iter_suppressions(tenant_key=tenant, kind=_kind(kind))
        if str(output) == "-":
            count = write_csv(entries, sys.stdout)
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                count = write_csv(entries, f)
    _err.print(f"exported {count} entries", markup=False)

"""``dripdrop audit replay``: replay the output topics and check the invariants (SPEC §10).

Exit codes besides the usual ones (``streams.cli.output``): 0 no violation, 6 at least one
violation (each is named by its kind in the report).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.audit.checks import AuditReport, attributes
from streams.audit.replay import ReplayError, read_topics, run_replay
from streams.cli.output import EXIT_UNEXPECTED, JsonOut, client, handled, parse_time

EXIT_VIOLATIONS = 6


class GapOn(StrEnum):
    """The time ``--gap-on`` spaces (``streams.audit.records.GapBasis``)."""

    decided = "decided"
    handoff = "handoff"


app = typer.Typer(help="Audit the log: replay the output topics and check the invariants.")

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_out = Console(highlight=False, soft_wrap=True)


@app.command("replay")
@handled
def replay(
    from_: Annotated[
        str | None, typer.Option("--from", help="Only records at or after (ISO 8601).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Only records before (ISO 8601).")] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Only this tenant's records.")
    ] = None,
    gap_on: Annotated[
        GapOn,
        typer.Option(
            "--gap-on",
            help="min_gap spaces the processor's decided times (decided) or the hand-offs,"
            " the finished_at of the sent results (handoff).",
        ),
    ] = GapOn.decided,
    json_out: JsonOut = False,
) -> None:
    """Replay the output topics and enrollments (with dead-letter); exit 6 on violations.

    Besides the send invariants: every enroll command the processor committed has its
    PostgreSQL row in a state that follows from the log, and every step execution the log
    decided is in the ledger (completeness).
    """
    start, end = parse_time(from_, "--from"), parse_time(to, "--to")
    show_bar = not json_out and sys.stderr.isatty()
    with (
        Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_err,
            disable=not show_bar,
            transient=False,
        ) as bar,
        client() as dd,
        dd.engine.connect() as conn,
    ):
        task = bar.add_task("records", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = run_replay(
                dd.settings,
                conn,
                tenant_key=tenant,
                start=start,
                end=end,
                progress=progress,
                gap_basis=gap_on.value,
            )
        except ReplayError as exc:
            _err.print(f"error [{exc.code}]: {exc}", markup=False)
            raise typer.Exit(EXIT_UNEXPECTED) from None
    if json_out:
        typer.echo(json.dumps(report.as_json(), indent=2, sort_keys=True, default=str))
    else:
        print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_VIOLATIONS)


@app.command("telemetry")
@handled
def telemetry(
    name: Annotated[
        str | None, typer.Option(help="Only this event name, e.g. dispatch.pool_exhausted.")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="Only records at or after (ISO 8601).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Only records before (ISO 8601).")] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Only this tenant's events.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Print at most the newest N.")] = 20,
) -> None:
    """Print telemetry events (one JSON object per line, oldest first) from the topic."""
    start, end = parse_time(from_, "--from"), parse_time(to, "--to")
    with client() as dd:
        try:
            replayed = read_topics(dd.settings, start=start, end=end, topics=("telemetry",))
        except ReplayError as exc:
            _err.print(f"error [{exc.code}]: {exc}", markup=False)
            raise typer.Exit(EXIT_UNEXPECTED) from None
    events = sorted(
        (
            t
            for t in replayed.records["telemetry"]
            if (name is None or t["name"] == name) and (tenant is None or t["tenant_key"] == tenant)
        ),
        key=lambda t: t["at"],
    )
    for t in events[-limit:] if limit > 0 else events:
        line = {"at": t["at"].isoformat(), "name": t["name"], "tenant_key": t["tenant_key"]}
        typer.echo(json.dumps({**line, "attributes": attributes(t)}, sort_keys=True, default=str))


def print_report(report: AuditReport) -> None:
    """The human report: records read, sends audited, violations per kind, then each one."""
    read = ", ".join(f"{topic} {n}" for topic, n in report.records.items())
    _out.print(f"records: {read}", markup=False)
    _out.print(f"sends audited: {report.sends}", markup=False)
    table = Table(title="invariants")
    table.add_column("check")
    table.add_column("violations", justify="right")
    for kind, count in report.counts().items():
        table.add_row(kind, str(count))
    _out.print(table)
    for violation in report.violations:
        _out.print(f"VIOLATION [{violation.kind}] {violation.message}", markup=False)
    for note in report.notes:
        _out.print(f"note: {note}", markup=False)
    _out.print(
        "OK: no violation" if report.ok else f"FAILED: {len(report.violations)} violation(s)"
    )

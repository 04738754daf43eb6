"""``dripdrop sends ambiguous`` and ``dripdrop sends resolve`` (issue 11; SPEC §4, §7).

An ambiguous send holds its enrollment until an operator says what happened: see
``streams/sends.py`` and the runbook (docs/operations.md, "Ambiguous sends").
"""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.output import JsonOut, Tenant, client, emit, handled

app = typer.Typer(help="Sends whose outcome is unknown: list them, settle one.")


@app.command("ambiguous")
@handled
def ambiguous(
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Only this tenant (default: every one).")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """List ambiguous sends, oldest first: each holds its enrollment until resolved."""
    with client() as dd:
        found = dd.list_ambiguous_sends(tenant_key=tenant)
    rows = [
        {
            "step_execution_id": s.step_execution_id,
            "tenant_key": s.tenant_key,
            "enrollment_id": s.enrollment_id,
            "adapter_id": s.adapter_id,
            "recipient": s.recipient,
            "step": s.step_key,
            "message_id": s.message_id,
            "since": s.since.isoformat(),
            "error": s.error,
            "reissued": s.reissued,
        }
        for s in found
    ]
    emit(rows, as_json=json_out, title="ambiguous sends")


@app.command("resolve")
@handled
def resolve(
    step_execution_id: Annotated[str, typer.Argument(help="Step execution id (from the list).")],
    tenant: Tenant,
    sent: Annotated[
        bool | None,
        typer.Option(
            "--sent/--not-sent",
            help="--sent: it went out (the enrollment goes on). --not-sent: it did not"
            " (re-issued once, same Message-ID).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Settle one ambiguous send as sent or not sent."""
    if sent is None:
        raise typer.BadParameter("say --sent or --not-sent", param_hint="--sent/--not-sent")
    with client() as dd:
        settled = dd.resolve_ambiguous_send(step_execution_id, tenant_key=tenant, sent=sent)
    emit(settled, as_json=json_out, title="resolved")

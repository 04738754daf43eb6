"""``dripdrop ingest``: hand one normalized inbound message to the processor (SPEC §8)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from streams.cli.output import JsonOut, Tenant, client, emit, handled


@handled
def ingest(
    tenant: Tenant,
    adapter_id: Annotated[str, typer.Option("--adapter", help="Receiving adapter id.")],
    message_file: Annotated[
        str | None, typer.Option("--message", help="JSON file with the message ('-' = stdin).")
    ] = None,
    message_id: Annotated[str | None, typer.Option(help="Message-ID.")] = None,
    in_reply_to: str | None = None,
    references: Annotated[str | None, typer.Option(help="References header value.")] = None,
    sender: Annotated[str | None, typer.Option("--from", help="From address.")] = None,
    to: str | None = None,
    subject: str | None = None,
    body_text: str | None = None,
    intent: Annotated[
        str | None,
        typer.Option(help="reply, ooo, auto_reply, bounce…; omitted: the processor classifies."),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Ingest an inbound message, from --message JSON or from the options."""
    message: dict[str, Any] = {}
    if message_file is not None:
        raw = sys.stdin.read() if message_file == "-" else open(message_file).read()  # noqa: SIM115
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc.msg}", param_hint="--message") from None
    options = {
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": references,
        "from": sender,
        "to": to,
        "subject": subject,
        "body_text": body_text,
    }
    message.update({k: v for k, v in options.items() if v is not None})
    if intent is not None:
        message.setdefault("intent", intent)
    with client() as dd:
        accepted = dd.ingest_inbound_message(adapter_id, message, tenant_key=tenant)
    emit(accepted, as_json=json_out, title="accepted")

"""``dripdrop sequence``, ``dripdrop version`` and ``dripdrop step``: authoring sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dripdrop_core.models import DelayFrom, Mode, ReplyBehavior, SendingWindow
from streams.cli.output import JsonOut, Tenant, client, emit, handled, parse_json_object

sequence_app = typer.Typer(help="Sequences (a key per tenant).")
version_app = typer.Typer(help="Sequence versions (lifecycle or outbound with a pool).")
step_app = typer.Typer(help="Steps of a sequence version.")


@sequence_app.command("create")
@handled
def create_sequence(
    tenant: Tenant,
    key: Annotated[str, typer.Option(help="Unique per tenant.")],
    name: str | None = None,
    allow_reenrollment: bool = False,
    json_out: JsonOut = False,
) -> None:
    """Create a sequence."""
    with client() as dd:
        sequence = dd.create_sequence(
            tenant_key=tenant, key=key, name=name, allow_reenrollment=allow_reenrollment
        )
    emit(sequence, as_json=json_out, title="sequence")


@version_app.command("create")
@handled
def create_version(
    sequence_id: Annotated[str, typer.Argument(help="Sequence id.")],
    tenant: Tenant,
    version: Annotated[int, typer.Option(help="Version number, > 0.")],
    mode: Annotated[Mode, typer.Option(case_sensitive=False)] = Mode.LIFECYCLE,
    pool_id: Annotated[str | None, typer.Option("--pool", help="Pool id (outbound).")] = None,
    config: Annotated[str | None, typer.Option(help="Version config, a JSON object.")] = None,
    inactive: Annotated[bool, typer.Option("--inactive")] = False,
    one_click_unsubscribe: Annotated[
        bool | None,
        typer.Option(
            "--one-click-unsubscribe/--no-one-click-unsubscribe",
            help="RFC 8058 List-Unsubscribe headers and {{ unsubscribe_url }} on the sends"
            " (default: on for lifecycle, off for outbound).",
        ),
    ] = None,
    company_stop: Annotated[
        bool,
        typer.Option(
            "--company-stop",
            help="A human reply stops the tenant's other live enrollments to the same company"
            " domain (of versions that opted in too; free-mail domains never).",
        ),
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Create a sequence version; outbound needs --pool (or config pool_id)."""
    merged = parse_json_object(config, "--config")
    if pool_id is not None:
        merged["pool_id"] = pool_id
    with client() as dd:
        created = dd.create_sequence_version(
            sequence_id,
            tenant_key=tenant,
            version=version,
            mode=mode,
            config=merged,
            active=not inactive,
            one_click_unsubscribe=one_click_unsubscribe,
            company_stop=company_stop or None,
        )
    emit(created, as_json=json_out, title="version")


def sending_window(start: int | None, end: int | None) -> dict[str, int] | None:
    """The window the options give: ``None`` without either, else the other one defaulted."""
    if start is None and end is None:
        return None
    window = SendingWindow()
    return {
        "start_hour": window.start_hour if start is None else start,
        "end_hour": window.end_hour if end is None else end,
    }


@step_app.command("create")
@handled
def create_step(
    version_id: Annotated[str, typer.Argument(help="Sequence version id.")],
    tenant: Tenant,
    key: Annotated[str, typer.Option(help="Unique in the version.")],
    position: Annotated[int, typer.Option(help="Order in the version, >= 0.")],
    channel: str = "email",
    delay_seconds: int = 0,
    delay_from: Annotated[DelayFrom, typer.Option(case_sensitive=False)] = DelayFrom.PREVIOUS_SEND,
    subject: Annotated[str, typer.Option(help="Subject template.")] = "",
    body: Annotated[str, typer.Option(help="Body template (plain text).")] = "",
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html-file",
            exists=True,
            dir_okay=False,
            help="HTML body template, read from this file (UTF-8): the send carries it as"
            " the HTML alternative to --body; enrollment data is HTML-escaped in it.",
        ),
    ] = None,
    adapter_id: Annotated[str | None, typer.Option("--adapter", help="Lifecycle.")] = None,
    adapter_override_id: Annotated[
        str | None, typer.Option("--adapter-override", help="Outbound: new thread.")
    ] = None,
    reply_behavior: Annotated[ReplyBehavior, typer.Option(case_sensitive=False)] = (
        ReplyBehavior.STOP
    ),
    window_start: Annotated[
        int | None,
        typer.Option(
            help="Sending window: first local hour (0-23) of the recipient's day when the step"
            " may send (default 8 when only --window-end is given).",
        ),
    ] = None,
    window_end: Annotated[
        int | None,
        typer.Option(
            help="Sending window: the hour (1-24) it closes, exclusive (default 21 when only"
            " --window-start is given); start >= end wraps midnight (22/7: only at night).",
        ),
    ] = None,
    thread_continuity: bool = False,
    json_out: JsonOut = False,
) -> None:
    """Create a step; --window-start/--window-end limit when it may send (no window: any hour)."""
    window = sending_window(window_start, window_end)
    with client() as dd:
        step = dd.create_step(
            version_id,
            tenant_key=tenant,
            key=key,
            position=position,
            channel=channel,
            delay_seconds=delay_seconds,
            delay_from=delay_from,
            subject_template=subject,
            body_template=body,
            html_template=None if html_file is None else html_file.read_text(encoding="utf-8"),
            adapter_id=adapter_id,
            adapter_override_id=adapter_override_id,
            reply_behavior=reply_behavior,
            sending_window=window,
            thread_continuity=thread_continuity,
        )
    emit(step, as_json=json_out, title="step")

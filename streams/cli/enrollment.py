"""``dripdrop enroll`` and ``dripdrop enrollment pause|resume|unenroll|repin|show|explain``."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli import inspect
from streams.cli.output import JsonOut, Tenant, client, emit, handled, parse_json_object

app = typer.Typer(help="Commands on one enrollment (applied by the stream processor).")


@handled
def enroll(
    tenant: Tenant,
    sequence_id: Annotated[str, typer.Option("--sequence", help="Sequence id.")],
    subscriber_id: Annotated[str, typer.Option("--subscriber", help="Host's subscriber id.")],
    recipient: Annotated[str, typer.Option(help="Email address.")],
    data: Annotated[str | None, typer.Option(help="Template variables, a JSON object.")] = None,
    timezone: Annotated[str | None, typer.Option(help="Recipient IANA timezone.")] = None,
    version_id: Annotated[str | None, typer.Option("--version", help="Version id.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Enroll a subscriber; prints the deterministic enrollment id."""
    with client() as dd:
        accepted = dd.enroll(
            tenant_key=tenant,
            sequence_id=sequence_id,
            subscriber_id=subscriber_id,
            recipient=recipient,
            data=parse_json_object(data, "--data"),
            recipient_timezone=timezone,
            sequence_version_id=version_id,
        )
    emit(accepted, as_json=json_out, title="accepted")


EnrollmentId = Annotated[str, typer.Argument(help="Enrollment id.")]
Reason = Annotated[str | None, typer.Option(help="Free-form operator reason.")]


@app.command("pause")
@handled
def pause(
    enrollment_id: EnrollmentId, tenant: Tenant, reason: Reason = None, json_out: JsonOut = False
) -> None:
    """Pause an enrollment (pending steps are held)."""
    with client() as dd:
        accepted = dd.pause_enrollment(enrollment_id, tenant_key=tenant, reason=reason)
    emit(accepted, as_json=json_out, title="accepted")


@app.command("resume")
@handled
def resume(enrollment_id: EnrollmentId, tenant: Tenant, json_out: JsonOut = False) -> None:
    """Resume a paused enrollment (never re-sends a step)."""
    with client() as dd:
        accepted = dd.resume_enrollment(enrollment_id, tenant_key=tenant)
    emit(accepted, as_json=json_out, title="accepted")


@app.command("unenroll")
@handled
def unenroll(
    enrollment_id: EnrollmentId, tenant: Tenant, reason: Reason = None, json_out: JsonOut = False
) -> None:
    """Stop an enrollment for good."""
    with client() as dd:
        accepted = dd.unenroll(enrollment_id, tenant_key=tenant, reason=reason)
    emit(accepted, as_json=json_out, title="accepted")


@app.command("repin")
@handled
def repin(
    enrollment_id: EnrollmentId,
    tenant: Tenant,
    adapter_id: Annotated[str, typer.Option("--adapter", help="New pinned adapter id.")],
    reason: Reason = None,
    json_out: JsonOut = False,
) -> None:
    """Move an outbound enrollment to another member of its pool (breaks the thread)."""
    with client() as dd:
        accepted = dd.repin_enrollment(
            enrollment_id, tenant_key=tenant, new_adapter_id=adapter_id, reason=reason
        )
    emit(accepted, as_json=json_out, title="accepted")


@app.command("show")
@handled
def show(enrollment_id: EnrollmentId, tenant: Tenant, json_out: JsonOut = False) -> None:
    """Show an enrollment as the processor recorded it."""
    with client() as dd:
        enrollment = dd.get_enrollment(enrollment_id, tenant_key=tenant)
    emit(enrollment, as_json=json_out, title="enrollment")


@app.command("explain")
@handled
def explain(enrollment_id: EnrollmentId, tenant: Tenant, json_out: JsonOut = False) -> None:
    """Its pin, its thread chain, and why its next step has not gone out yet."""
    inspect.explain_enrollment(enrollment_id, tenant, as_json=json_out)

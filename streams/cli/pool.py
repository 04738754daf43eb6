"""``dripdrop pool``: create, add-member, remove-member, show, delete."""

from __future__ import annotations

from typing import Annotated

import typer

from dripdrop_core.models import MemberClass, PinPolicy
from streams.cli.output import JsonOut, Tenant, client, emit, handled

app = typer.Typer(help="Tenant-scoped sender pools and their members.")


@app.command("create")
@handled
def create(
    tenant: Tenant,
    name: Annotated[str, typer.Option(help="Unique per tenant.")],
    on_pin_unavailable: Annotated[
        PinPolicy, typer.Option(case_sensitive=False, help="pause or reassign.")
    ] = PinPolicy.REASSIGN,
    json_out: JsonOut = False,
) -> None:
    """Create a pool."""
    with client() as dd:
        pool = dd.create_adapter_pool(
            tenant_key=tenant, name=name, on_pin_unavailable=on_pin_unavailable
        )
    emit(pool, as_json=json_out, title="pool")


@app.command("add-member")
@handled
def add_member(
    pool_id: Annotated[str, typer.Argument(help="Pool id.")],
    tenant: Tenant,
    adapter_id: Annotated[str, typer.Option("--adapter", help="Adapter id (same tenant).")],
    member_class: Annotated[
        MemberClass, typer.Option("--class", case_sensitive=False, help="mailbox or esp_api.")
    ] = MemberClass.MAILBOX,
    weight: Annotated[int, typer.Option(help="WDRR weight, > 0.")] = 1,
    inactive: Annotated[bool, typer.Option("--inactive")] = False,
    json_out: JsonOut = False,
) -> None:
    """Add one of the tenant's adapters to a pool."""
    with client() as dd:
        member = dd.add_pool_member(
            pool_id,
            tenant_key=tenant,
            adapter_id=adapter_id,
            member_class=member_class,
            weight=weight,
            active=not inactive,
        )
    emit(member, as_json=json_out, title="member")


@app.command("remove-member")
@handled
def remove_member(
    pool_id: Annotated[str, typer.Argument(help="Pool id.")],
    tenant: Tenant,
    adapter_id: Annotated[str, typer.Option("--adapter", help="Adapter id.")],
    json_out: JsonOut = False,
) -> None:
    """Remove a member (existing pins are not moved; use enrollment repin)."""
    with client() as dd:
        member = dd.remove_pool_member(pool_id, tenant_key=tenant, adapter_id=adapter_id)
    emit(member, as_json=json_out, title="removed member")


@app.command("show")
@handled
def show(
    pool_id: Annotated[str, typer.Argument(help="Pool id.")],
    tenant: Tenant,
    json_out: JsonOut = False,
) -> None:
    """Show a pool, its members, their adapters' health and ramp fields, and warnings."""
    with client() as dd:
        view = dd.inspect_pool(pool_id, tenant_key=tenant)
    if json_out:
        emit(view, as_json=True)
        return
    emit(view.pool, as_json=False, title="pool")
    adapters = {a.id: a for a in view.adapters}
    emit(
        [
            {
                "adapter_id": m.adapter_id,
                "name": adapters[m.adapter_id].name,
                "class": str(m.member_class),
                "weight": m.weight,
                "active": m.active,
                "health": adapters[m.adapter_id].health_state,
                "resting_until": adapters[m.adapter_id].resting_until,
                "daily_cap": adapters[m.adapter_id].daily_cap,
            }
            for m in view.members
        ],
        as_json=False,
        title="members",
    )
    for warning in view.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command("delete")
@handled
def delete(
    pool_id: Annotated[str, typer.Argument(help="Pool id.")],
    tenant: Tenant,
    json_out: JsonOut = False,
) -> None:
    """Delete a pool and its members (refused while a sequence version uses it)."""
    with client() as dd:
        pool = dd.delete_adapter_pool(pool_id, tenant_key=tenant)
    emit(pool, as_json=json_out, title="deleted pool")

"""``dripdrop pool``: create, add-member, remove-member, show, delete."""

from __future__ import annotations

from typing import Annotated

import typer

from dripdrop_core.models import MemberClass, PinPolicy
from streams.cli import inspect
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
    """Show a pool and, per member: health, resting_until, cap and sends today, last send,
    pinned enrollments, recent message events; and validation warnings."""
    inspect.show_pool(pool_id, tenant, as_json=json_out)


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

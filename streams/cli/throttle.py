"""``dripdrop throttle``: recipient-domain throttles (SPEC §13): set, list, remove."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.output import JsonOut, Tenant, client, emit, handled

app = typer.Typer(
    help="Recipient-domain throttles: at most N sends per UTC hour / day to one domain,"
    " through one adapter or all of the tenant's. Over a limit a send is deferred"
    " (reason domain_throttle) until the next hour or day."
)


@app.command("set")
@handled
def set_throttle(
    tenant: Tenant,
    domain: Annotated[str, typer.Option(help="Recipient domain, e.g. gmail.com (exact match).")],
    per_hour: Annotated[int | None, typer.Option(help="Sends per UTC hour, > 0.")] = None,
    per_day: Annotated[int | None, typer.Option(help="Sends per UTC day, > 0.")] = None,
    adapter_id: Annotated[
        str | None,
        typer.Option("--adapter", help="Through this adapter only (default: all together)."),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Set (or replace the limits of) the throttle for a domain and scope."""
    with client() as dd:
        throttle = dd.set_domain_throttle(
            tenant_key=tenant,
            domain=domain,
            per_hour=per_hour,
            per_day=per_day,
            adapter_id=adapter_id,
        )
    emit(throttle, as_json=json_out, title="throttle")


@app.command("list")
@handled
def list_throttles(tenant: Tenant, json_out: JsonOut = False) -> None:
    """The tenant's throttles, by domain (tenant-wide first)."""
    with client() as dd:
        throttles = dd.list_domain_throttles(tenant_key=tenant)
    emit(throttles, as_json=json_out, title="throttles")


@app.command("remove")
@handled
def remove(
    throttle_id: Annotated[str, typer.Argument(help="Throttle id.")],
    tenant: Tenant,
    json_out: JsonOut = False,
) -> None:
    """Lift a throttle."""
    with client() as dd:
        throttle = dd.remove_domain_throttle(throttle_id, tenant_key=tenant)
    emit(throttle, as_json=json_out, title="removed")

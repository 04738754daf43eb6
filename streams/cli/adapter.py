"""``dripdrop adapter``: create, update (ramp fields, config), set-health, show.

Secrets in ``--config`` are references (``{"secret": "env:NAME"}`` or ``file:/path``);
a value is refused (``invalid_config``) and output never shows one (``streams.secrets``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dripdrop_core.models import Adapter, HealthState
from streams.cli import inspect
from streams.cli.output import JsonOut, Tenant, client, emit, handled, parse_json_object, parse_time
from streams.secrets import redact

app = typer.Typer(help="Sending identities (mailboxes, ESP accounts) and their ramp fields.")

CLEARABLE = (
    "from_address",
    "health_state",
    "health_score",
    "resting_until",
    "daily_cap",
    "ramp_floor",
    "ramp_increment",
    "ramp_started_at",
)

CONFIG_HELP = (
    'Provider config, a JSON object; secrets by reference: {"password": {"secret": "file:/path"}}.'
)


def _shown(adapter: Adapter) -> dict[str, Any]:
    """The adapter for output, its config redacted (references kept, values as ***)."""
    return {**adapter.model_dump(mode="json"), "config": redact(adapter.config)}


@app.command("create")
@handled
def create(
    tenant: Tenant,
    name: Annotated[str, typer.Option(help="Unique per tenant.")],
    provider: Annotated[
        str, typer.Option(help="smtp, gmail, microsoft365, mailgun, ses…")
    ] = "smtp",
    channel: str = "email",
    from_address: Annotated[str | None, typer.Option(help="Sender address.")] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone of the daily cap.")] = "UTC",
    health_state: Annotated[HealthState | None, typer.Option(case_sensitive=False)] = None,
    daily_cap: int | None = None,
    ramp_floor: int | None = None,
    ramp_increment: int | None = None,
    ramp_started_at: Annotated[str | None, typer.Option(help="ISO 8601 or 'now'.")] = None,
    min_gap_seconds: int = 0,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it inactive.")] = False,
    config: Annotated[str | None, typer.Option(help=CONFIG_HELP)] = None,
    json_out: JsonOut = False,
) -> None:
    """Create a channel adapter."""
    with client() as dd:
        adapter = dd.create_channel_adapter(
            tenant_key=tenant,
            name=name,
            provider=provider,
            channel=channel,
            from_address=from_address,
            timezone=timezone,
            active=not inactive,
            health_state=health_state,
            daily_cap=daily_cap,
            ramp_floor=ramp_floor,
            ramp_increment=ramp_increment,
            ramp_started_at=parse_time(ramp_started_at, "--ramp-started-at"),
            min_gap_seconds=min_gap_seconds,
            config=parse_json_object(config, "--config"),
        )
    emit(_shown(adapter), as_json=json_out, title="adapter")


@app.command("update")
@handled
def update(
    adapter_id: Annotated[str, typer.Argument(help="Adapter id.")],
    tenant: Tenant,
    name: str | None = None,
    provider: str | None = None,
    from_address: str | None = None,
    timezone: str | None = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    health_state: Annotated[HealthState | None, typer.Option(case_sensitive=False)] = None,
    daily_cap: int | None = None,
    ramp_floor: int | None = None,
    ramp_increment: int | None = None,
    ramp_started_at: Annotated[str | None, typer.Option(help="ISO 8601 or 'now'.")] = None,
    min_gap_seconds: int | None = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(help=f"Set a field to null (repeatable): {', '.join(CLEARABLE)}."),
    ] = None,
    config: Annotated[str | None, typer.Option(help=CONFIG_HELP + " Replaces it whole.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Change adapter fields; only the options given change (the seed's ramp update)."""
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "name": name,
            "provider": provider,
            "from_address": from_address,
            "timezone": timezone,
            "active": active,
            "health_state": health_state,
            "daily_cap": daily_cap,
            "ramp_floor": ramp_floor,
            "ramp_increment": ramp_increment,
            "ramp_started_at": parse_time(ramp_started_at, "--ramp-started-at"),
            "min_gap_seconds": min_gap_seconds,
            "config": None if config is None else parse_json_object(config, "--config"),
        }.items()
        if value is not None
    }
    for field in clear or []:
        if field not in CLEARABLE:
            raise typer.BadParameter(f"cannot clear {field!r}", param_hint="--clear")
        changes[field] = None
    with client() as dd:
        adapter = dd.update_channel_adapter(adapter_id, tenant_key=tenant, **changes)
    emit(_shown(adapter), as_json=json_out, title="adapter")


@app.command("set-health")
@handled
def set_health(
    adapter_id: Annotated[str, typer.Argument(help="Adapter id.")],
    tenant: Tenant,
    state: Annotated[str, typer.Option(help="active, ramping, resting, probing or none.")],
    score: Annotated[float | None, typer.Option(help="0.0 to 1.0.")] = None,
    resting_until: Annotated[str | None, typer.Option(help="ISO 8601.")] = None,
    source: str = "operator",
    json_out: JsonOut = False,
) -> None:
    """External health signal: set the state (with resting_until and a score)."""
    health = None if state.strip().lower() in {"none", "null", "unmanaged"} else state.strip()
    with client() as dd:
        adapter = dd.set_adapter_health(
            adapter_id,
            tenant_key=tenant,
            health_state=health,
            health_score=score,
            resting_until=parse_time(resting_until, "--resting-until"),
            source=source,
        )
    emit(_shown(adapter), as_json=json_out, title="adapter")


@app.command("show")
@handled
def show(
    adapter_id: Annotated[str, typer.Argument(help="Adapter id.")],
    tenant: Tenant,
    json_out: JsonOut = False,
) -> None:
    """Show one adapter: health, resting_until, cap and sends today, pins, recent events."""
    inspect.show_adapter(adapter_id, tenant, as_json=json_out)

"""Authored entities: adapters, pools, members, sequences, versions, steps (SPEC §4-§7).

These are the values hosts author through the API, that travel on the compacted
``config`` topic and that PostgreSQL stores. Runtime state (sends counted today,
WDRR deficits, health timers) lives in ``state.py``, never here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

ESP_PROVIDERS = frozenset({"mailgun", "sendgrid", "postmark", "mailersend", "ses"})
"""Providers that are ESP APIs: adding one as a ``mailbox`` member is ``class_mismatch``."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime normalised to UTC: state and decisions store only these,
so a JSON round trip through a changelog table gives back an equal value."""


class Frozen(BaseModel):
    """Base of every core value: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class HealthState(StrEnum):
    ACTIVE = "active"
    RAMPING = "ramping"
    RESTING = "resting"
    PROBING = "probing"


class MemberClass(StrEnum):
    MAILBOX = "mailbox"
    ESP_API = "esp_api"


class PinPolicy(StrEnum):
    PAUSE = "pause"
    REASSIGN = "reassign"


class Mode(StrEnum):
    LIFECYCLE = "lifecycle"
    OUTBOUND = "outbound"


class ReplyBehavior(StrEnum):
    STOP = "stop"
    PAUSE = "pause"
    CONTINUE = "continue"


class DelayFrom(StrEnum):
    ENROLLMENT = "enrollment"
    PREVIOUS_SEND = "previous_send"


class EnrollmentState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    REPLIED = "replied"
    STOPPED = "stopped"  # complaint, unsubscribe, company stop
    UNENROLLED = "unenrolled"
    REJECTED = "rejected"  # never started, e.g. pool_exhausted
    BOUNCED = "bounced"  # the recipient was refused for good (SPEC §7)
    FAILED = "failed"  # template error, retries exhausted (SPEC §7)
    WAITING = "waiting"  # accepted, queued for capacity (SPEC §5.2)


class Adapter(Frozen):
    """A sending identity (a mailbox or an ESP account) with its ramp and pacing fields."""

    id: str
    tenant_key: str
    name: str
    channel: str = "email"
    provider: str = "smtp"
    active: bool = True
    from_address: str | None = None
    timezone: str = "UTC"
    health_state: HealthState | None = None
    health_score: float | None = Field(default=None, ge=0.0, le=1.0)
    resting_until: datetime | None = None
    daily_cap: int | None = Field(default=None, gt=0)
    ramp_floor: int | None = Field(default=None, ge=0)
    ramp_increment: int | None = Field(default=None, gt=0)
    ramp_started_at: datetime | None = None
    min_gap_seconds: int = Field(default=0, ge=0)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("resting_until", "ramp_started_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        return value


class Pool(Frozen):
    id: str
    tenant_key: str
    name: str
    on_pin_unavailable: PinPolicy = PinPolicy.REASSIGN
    active: bool = True


class DomainThrottle(Frozen):
    """At most ``per_hour`` / ``per_day`` sends to one recipient domain (SPEC §13).

    Through ``adapter_id`` only, or (``None``) through every adapter of the tenant. Hours
    and days are UTC; a domain is matched exactly (``gmail.com``, not its subdomains).
    """

    id: str
    tenant_key: str
    domain: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9.-]+$")
    adapter_id: str | None = None
    per_hour: int | None = Field(default=None, gt=0)
    per_day: int | None = Field(default=None, gt=0)


class PoolMember(Frozen):
    pool_id: str
    adapter_id: str
    tenant_key: str
    member_class: MemberClass = MemberClass.MAILBOX
    weight: int = Field(default=1, gt=0)
    active: bool = True


class Sequence(Frozen):
    id: str
    tenant_key: str
    key: str
    name: str
    allow_reenrollment: bool = False


class SequenceVersion(Frozen):
    id: str
    sequence_id: str
    tenant_key: str
    version: int = Field(gt=0)
    mode: Mode = Mode.LIFECYCLE
    pool_id: str | None = None
    active: bool = True
    max_wait_seconds: int | None = Field(default=None, gt=0)
    """Outbound: an enrollment waiting for capacity longer than this is rejected
    (``capacity_wait_expired``); ``None`` waits as long as it takes (SPEC §5.2)."""
    one_click_unsubscribe: bool | None = None
    """RFC 8058 ``List-Unsubscribe`` headers and ``{{ unsubscribe_url }}`` on its sends
    (SPEC §13); ``None``: the mode's default, on for lifecycle, off for outbound."""
    company_stop: bool = False
    """A human reply stops the tenant's other live enrollments to the replier's company
    domain whose versions opted in too (SPEC §13; free-mail domains never)."""


class SendingWindow(Frozen):
    """The hours of the recipient's local day when a step **may** send (SPEC §13): allowed
    iff ``start_hour <= hour < end_hour``; outside it the step is deferred to the next opening.

    A window with ``start_hour >= end_hour`` wraps midnight (22..7 sends only at night).
    Defaults: 08:00-21:00.
    """

    start_hour: int = Field(default=8, ge=0, le=23)
    end_hour: int = Field(default=21, ge=0, le=24)


class Step(Frozen):
    id: str
    version_id: str
    tenant_key: str
    key: str
    position: int = Field(ge=0)
    channel: str = "email"
    delay_seconds: int = Field(default=0, ge=0)
    delay_from: DelayFrom = DelayFrom.PREVIOUS_SEND
    subject_template: str = ""
    body_template: str = ""
    html_template: str | None = None
    """The HTML alternative (autoescaped); ``None``: the send is plain text only."""
    adapter_id: str | None = None  # lifecycle: the step's own adapter
    adapter_override_id: str | None = None  # outbound: send through this one, new thread
    reply_behavior: ReplyBehavior = ReplyBehavior.STOP
    sending_window: SendingWindow | None = Field(
        default=None,
        # Config records written before the rename carry the same window as ``quiet_hours``.
        validation_alias=AliasChoices("sending_window", "quiet_hours"),
    )
    """When the step may send, in the recipient's timezone; ``None``: at any hour."""
    thread_continuity: bool = False  # lifecycle only: thread under the previous send

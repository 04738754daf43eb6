"""Recipient-domain throttles (SPEC §13): fixed UTC windows with an exact end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from dripdrop_core.decisions import Defer, Send
from dripdrop_core.dispatch import DueStep, decide_dispatch
from dripdrop_core.errors import InputError
from dripdrop_core.models import Adapter, DomainThrottle, HealthState, Step
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.reasons import Reason
from dripdrop_core.state import AdapterState
from dripdrop_core.suppression import recipient_domain
from dripdrop_core.throttles import (
    ThrottleCounter,
    Throttled,
    applies,
    count_send,
    parse_domain,
    rolled,
    throttled_until,
)

NOW = datetime(2026, 12, 7, 14, 25, tzinfo=UTC)
HOUR = datetime(2026, 12, 7, 14, tzinfo=UTC)


def _throttle(**limits: int) -> DomainThrottle:
    return DomainThrottle(id="t1", tenant_key="acct", domain="gmail.com", **limits)


def test_a_counter_counts_in_its_hour_and_day_and_restarts_in_the_next() -> None:
    counter = count_send(count_send(ThrottleCounter(), NOW), NOW + timedelta(minutes=10))
    assert (counter.hour, counter.in_hour, counter.day, counter.in_day) == (
        HOUR,
        2,
        date(2026, 12, 7),
        2,
    )
    later = rolled(counter, NOW + timedelta(hours=1))
    assert (later.in_hour, later.in_day) == (0, 2)
    assert rolled(counter, NOW + timedelta(days=1)).in_day == 0


def test_the_hourly_limit_defers_to_the_next_hour() -> None:
    full = Throttled(throttle=_throttle(per_hour=2), counter=ThrottleCounter(hour=HOUR, in_hour=2))
    assert throttled_until([full], NOW) == HOUR + timedelta(hours=1)
    one_left = full.model_copy(update={"counter": ThrottleCounter(hour=HOUR, in_hour=1)})
    assert throttled_until([one_left], NOW) is None
    assert throttled_until([full], HOUR + timedelta(hours=1)) is None


def test_the_daily_limit_defers_to_the_next_utc_day_and_the_latest_end_wins() -> None:
    counter = ThrottleCounter(hour=HOUR, in_hour=1, day=NOW.date(), in_day=5)
    daily = Throttled(throttle=_throttle(per_day=5), counter=counter)
    hourly = Throttled(throttle=_throttle(per_hour=1), counter=counter)
    midnight = datetime(2026, 12, 8, tzinfo=UTC)
    assert throttled_until([daily], NOW) == midnight
    assert throttled_until([hourly, daily], NOW) == midnight
    assert throttled_until([hourly], NOW) == HOUR + timedelta(hours=1)


def test_a_throttle_applies_to_its_domain_through_its_adapter_or_every_adapter() -> None:
    tenant_wide, one = (
        _throttle(per_hour=1),
        _throttle(per_hour=1).model_copy(update={"adapter_id": "a1"}),
    )
    assert applies(tenant_wide, "gmail.com", "a2") and applies(one, "gmail.com", "a1")
    assert not applies(one, "gmail.com", "a2")
    assert not applies(tenant_wide, "mail.gmail.com", "a1")


def test_domains_are_parsed_and_recipient_domains_read() -> None:
    assert parse_domain(" @Gmail.COM ") == "gmail.com"
    with pytest.raises(InputError, match="not an address"):
        parse_domain("ann@gmail.com")
    with pytest.raises(InputError):
        parse_domain("no spaces.com x")
    assert recipient_domain("Ann@Example.ORG") == "example.org"


@pytest.fixture
def due(step_factory: Callable[..., Step]) -> Callable[..., DueStep]:
    def make(*throttles: Throttled) -> DueStep:
        return DueStep(
            enrollment_id="e1",
            step_execution_id="x1",
            tenant_key="acct",
            step=step_factory(),
            throttles=throttles,
        )

    return make


def test_dispatch_gates_in_order_cap_then_throttle_then_gap(
    due: Callable[..., DueStep], adapter_factory: Callable[..., Adapter]
) -> None:
    adapter = adapter_factory(daily_cap=10, min_gap_seconds=600)
    full = Throttled(throttle=_throttle(per_hour=1), counter=ThrottleCounter(hour=HOUR, in_hour=1))
    state = AdapterState(adapter_id=adapter.id, health_state=HealthState.ACTIVE)
    policy = OutboundPolicy()

    throttled = decide_dispatch(due(full), adapter, state, NOW, policy=policy)
    assert isinstance(throttled, Defer) and throttled.reason is Reason.DOMAIN_THROTTLE
    assert throttled.until == HOUR + timedelta(hours=1) and throttled.facts.domain == "gmail.com"

    capped = state.model_copy(update={"sent_today": 10, "day": NOW.date()})
    at_cap = decide_dispatch(due(full), adapter, capped, NOW, policy=policy)
    assert isinstance(at_cap, Defer) and at_cap.reason is Reason.CAP

    free = full.model_copy(update={"counter": ThrottleCounter()})
    recent = state.model_copy(update={"last_sent_at": NOW - timedelta(seconds=60)})
    gap = decide_dispatch(due(free), adapter, recent, NOW, policy=policy)
    assert isinstance(gap, Defer) and gap.reason is Reason.GAP
    assert isinstance(decide_dispatch(due(free), adapter, state, NOW, policy=policy), Send)

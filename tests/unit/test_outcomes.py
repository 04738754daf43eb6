"""Send outcomes (SPEC §7): every status has a row, none marches a sequence on but ``sent``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from dripdrop_core.circuit import Signal
from dripdrop_core.enrollment import Event
from dripdrop_core.outcomes import (
    OUTCOMES,
    SendStatus,
    holds_enrollment,
    next_attempt,
    outcome_rule,
    retry_delay,
)

from .conftest import T0

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "dispatch-results.avsc"
BASE = timedelta(seconds=5)
DAY = timedelta(hours=24)


def test_every_status_of_the_schema_has_exactly_one_row() -> None:
    fields = {f["name"]: f for f in json.loads(SCHEMA.read_text())["fields"]}
    symbols = set(fields["status"]["type"]["symbols"])
    assert symbols == {str(s) for s in SendStatus} == {str(s) for s in OUTCOMES}


def test_only_sent_advances_and_threads() -> None:
    assert [s for s, r in OUTCOMES.items() if r.advances] == [SendStatus.SENT]
    assert [s for s, r in OUTCOMES.items() if r.threads] == [SendStatus.SENT]


@pytest.mark.parametrize(
    ("status", "event", "again", "circuit"),
    [
        ("sent", None, None, Signal.SUCCESS),
        ("bounced", Event.BOUNCE, None, Signal.SUCCESS),
        ("failed", Event.FAIL, None, None),
        ("retry", None, "recipient", Signal.SUCCESS),
        ("deferred", None, "adapter", Signal.FAILURE),
        ("ambiguous", None, None, None),
    ],
)
def test_rows(status: str, event: Event | None, again: str | None, circuit: Signal | None) -> None:
    rule = outcome_rule(status)
    assert (rule.event, rule.again, rule.circuit) == (event, again, circuit)
    # A failure either stops the enrollment, holds it, or sends the same again: never on.
    if status != "sent":
        assert rule.event is not None or rule.again is not None or rule.holds


def test_a_bounce_suppresses_and_counts_toward_the_bounce_rate() -> None:
    rule = outcome_rule("bounced")
    assert rule.suppress and rule.counts_bounce
    assert not any(r.suppress or r.counts_bounce for s, r in OUTCOMES.items() if s != "bounced")


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        outcome_rule("delivered")


def test_holds_only_ambiguous() -> None:
    assert holds_enrollment("ambiguous")
    assert not any(holds_enrollment(s) for s in ("sent", "failed", "retry", "deferred", "x"))


def test_backoff_doubles_and_stops_doubling_at_64x() -> None:
    assert [retry_delay(BASE, n) for n in (0, 1, 2, 6, 9)] == [
        BASE,
        BASE * 2,
        BASE * 4,
        BASE * 64,
        BASE * 64,
    ]


def test_retry_after_is_a_floor() -> None:
    rule = outcome_rule("deferred")
    short = next_attempt(
        rule, decided_at=T0, retries=0, now=T0, base=BASE, retry_after=None, limit=DAY
    )
    assert short.at == T0 + BASE
    floor = next_attempt(
        rule,
        decided_at=T0,
        retries=0,
        now=T0,
        base=BASE,
        retry_after=timedelta(seconds=90),
        limit=DAY,
    )
    assert floor.at == T0 + timedelta(seconds=90)


def test_a_recipient_deferral_gives_up_after_the_limit_an_adapter_one_never() -> None:
    late = T0 + DAY - timedelta(seconds=1)
    recipient = next_attempt(
        outcome_rule("retry"),
        decided_at=T0,
        retries=3,
        now=late,
        base=BASE,
        retry_after=None,
        limit=DAY,
    )
    assert recipient.at is None and recipient.reason == "retry_expired"
    within = next_attempt(
        outcome_rule("retry"),
        decided_at=T0,
        retries=3,
        now=T0,
        base=BASE,
        retry_after=None,
        limit=DAY,
    )
    assert within.at == T0 + BASE * 8
    adapter = next_attempt(
        outcome_rule("deferred"),
        decided_at=T0,
        retries=30,
        now=T0 + DAY * 30,
        base=BASE,
        retry_after=None,
        limit=DAY,
    )
    assert adapter.at == T0 + DAY * 30 + BASE * 64

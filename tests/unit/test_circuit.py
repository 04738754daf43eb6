"""The circuit breaker table, walked pair by pair, and admission before a hand-off."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from dripdrop_core.circuit import (
    TRANSITIONS,
    Circuit,
    CircuitPolicy,
    CircuitState,
    Signal,
    admit,
    on_signal,
)

from .conftest import T0

POLICY = CircuitPolicy(
    threshold=3,
    cooldown=timedelta(minutes=5),
    cooldown_cap=timedelta(minutes=20),
    probe_timeout=timedelta(minutes=1),
)
OPEN = Circuit(state=CircuitState.OPEN, opens=1, until=T0 + timedelta(minutes=5))
HALF = Circuit(state=CircuitState.HALF_OPEN, opens=1, until=T0 + timedelta(minutes=1))


def test_every_state_and_signal_pair_has_a_rule() -> None:
    assert set(TRANSITIONS) == set(itertools.product(CircuitState, Signal))


def test_closed_counts_failures_and_opens_at_the_threshold() -> None:
    c = Circuit()
    for n in range(1, 3):
        change = on_signal(c, Signal.FAILURE, T0, policy=POLICY)
        c = change.circuit
        assert (c.state, c.failures, change.opened) == (CircuitState.CLOSED, n, False)
    change = on_signal(c, Signal.FAILURE, T0, policy=POLICY)
    assert change.opened and change.circuit == OPEN


def test_a_success_resets_the_count_and_closes_from_any_state() -> None:
    partly = Circuit(failures=2)
    assert on_signal(partly, Signal.SUCCESS, T0, policy=POLICY).circuit == Circuit()
    for c in (OPEN, HALF):
        change = on_signal(c, Signal.SUCCESS, T0, policy=POLICY)
        assert change.closed and change.circuit == Circuit()
    assert not on_signal(Circuit(), Signal.SUCCESS, T0, policy=POLICY).closed


def test_a_late_failure_while_open_changes_nothing() -> None:
    change = on_signal(OPEN, Signal.FAILURE, T0 + timedelta(minutes=1), policy=POLICY)
    assert change.circuit == OPEN and not change.opened


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    c = HALF
    lengths = []
    for _ in range(4):
        change = on_signal(c, Signal.FAILURE, T0, policy=POLICY)
        assert change.opened and change.circuit.state is CircuitState.OPEN
        assert change.circuit.until is not None
        lengths.append(change.circuit.until - T0)
        c = change.circuit.model_copy(update={"state": CircuitState.HALF_OPEN})
    assert lengths == [timedelta(minutes=m) for m in (10, 20, 20, 20)]


def test_admission_holds_while_open_then_lets_one_probe_through() -> None:
    assert admit(Circuit(), T0, policy=POLICY).allowed
    held = admit(OPEN, T0 + timedelta(minutes=4), policy=POLICY)
    assert not held.allowed and held.until == OPEN.until and held.circuit == OPEN
    probe_at = T0 + timedelta(minutes=5)
    probe = admit(OPEN, probe_at, policy=POLICY)
    assert probe.allowed and probe.probe
    assert probe.circuit.state is CircuitState.HALF_OPEN
    assert probe.circuit.until == probe_at + POLICY.probe_timeout
    # While the probe is out, every other send waits for its answer.
    waiting = admit(probe.circuit, probe_at + timedelta(seconds=30), policy=POLICY)
    assert not waiting.allowed and waiting.until == probe.circuit.until
    # A probe whose answer never came lets another one go.
    again = admit(probe.circuit, probe_at + POLICY.probe_timeout, policy=POLICY)
    assert again.allowed and again.probe


@pytest.mark.parametrize("threshold", [1, 5])
def test_threshold_one_opens_on_the_first_failure(threshold: int) -> None:
    policy = POLICY.model_copy(update={"threshold": threshold})
    c = Circuit()
    for _ in range(threshold - 1):
        c = on_signal(c, Signal.FAILURE, T0, policy=policy).circuit
    assert on_signal(c, Signal.FAILURE, T0, policy=policy).opened

"""The per-adapter circuit breaker of adapter-level send failures (SPEC §7), as a table.

An adapter-level failure (authentication, TLS, refused connection, 421, quota, HTTP
401/403/429/5xx) says nothing about the recipient: the step is deferred, never failed. After
``threshold`` consecutive ones the circuit opens: the adapter's sends are held (no new step
decided, no deferred send re-issued) for a cool-down, then one send goes as a probe; its
success closes the circuit, its failure opens it again for twice as long (up to a cap).

::

    closed ──failure × threshold──▶ open ──cool-down over, one send──▶ half_open
      ▲  ▲                           ▲                                    │
      │  └──────── success ──────────┼──────────── success ───────────────┤
      │                              └──────────── failure ───────────────┘
      └─ success (any state)

``Signal.SUCCESS`` is any answer that proves the account works (sent, and also a recipient
bounce or 4xx: the server talked to us). Pure: the shell keeps ``Circuit`` in the adapter's
state (a changelogged table) and calls ``on_signal`` with each send outcome and ``admit``
before each hand-off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from pydantic import Field

from dripdrop_core.models import Frozen, UtcDatetime


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Signal(StrEnum):
    """What a send outcome tells about the adapter."""

    SUCCESS = "success"
    FAILURE = "failure"


class CircuitPolicy(Frozen):
    """Thresholds of the breaker.

    Attributes:
        threshold: Consecutive adapter failures that open the circuit.
        cooldown: First open period; each failed probe doubles it, up to ``cooldown_cap``.
        probe_timeout: A probe without an answer after this long lets another probe go
            (its result may be lost with a crash; the circuit must not stay half-open).
    """

    threshold: int = Field(default=5, gt=0)
    cooldown: timedelta = timedelta(minutes=5)
    cooldown_cap: timedelta = timedelta(hours=1)
    probe_timeout: timedelta = timedelta(minutes=2)


class Circuit(Frozen):
    """One adapter's breaker.

    Attributes:
        state: closed (sending), open (held until ``until``), half_open (a probe is out).
        failures: Consecutive adapter failures while closed.
        opens: Consecutive openings without a success (the cool-down doubles with each).
        until: Open: when the probe may go. Half-open: when a silent probe times out.
    """

    state: CircuitState = CircuitState.CLOSED
    failures: int = Field(default=0, ge=0)
    opens: int = Field(default=0, ge=0)
    until: UtcDatetime | None = None


class Change(Frozen):
    """A circuit after a signal, and whether it just opened or closed (for telemetry)."""

    circuit: Circuit
    opened: bool = False
    closed: bool = False


def _cooldown(opens: int, policy: CircuitPolicy) -> timedelta:
    return min(policy.cooldown * (1 << min(opens, 16)), policy.cooldown_cap)


def _open(c: Circuit, now: datetime, policy: CircuitPolicy) -> Change:
    until = now + _cooldown(c.opens, policy)
    opened = Circuit(state=CircuitState.OPEN, failures=0, opens=c.opens + 1, until=until)
    return Change(circuit=opened, opened=True)


def _closed_failure(c: Circuit, now: datetime, policy: CircuitPolicy) -> Change:
    if c.failures + 1 >= policy.threshold:
        return _open(c, now, policy)
    return Change(circuit=c.model_copy(update={"failures": c.failures + 1}))


def _success(c: Circuit, _now: datetime, _policy: CircuitPolicy) -> Change:
    return Change(circuit=Circuit(), closed=c.state is not CircuitState.CLOSED)


def _unchanged(c: Circuit, _now: datetime, _policy: CircuitPolicy) -> Change:
    return Change(circuit=c)


_Rule = Callable[[Circuit, datetime, CircuitPolicy], Change]

TRANSITIONS: Mapping[tuple[CircuitState, Signal], _Rule] = MappingProxyType(
    {
        (CircuitState.CLOSED, Signal.FAILURE): _closed_failure,
        (CircuitState.CLOSED, Signal.SUCCESS): _success,
        # A late failure of a send issued before the circuit opened changes nothing.
        (CircuitState.OPEN, Signal.FAILURE): _unchanged,
        (CircuitState.OPEN, Signal.SUCCESS): _success,
        (CircuitState.HALF_OPEN, Signal.FAILURE): _open,
        (CircuitState.HALF_OPEN, Signal.SUCCESS): _success,
    }
)
"""(state, signal) → rule. Every pair is listed: a test walks the whole table."""


def on_signal(c: Circuit, signal: Signal, now: datetime, *, policy: CircuitPolicy) -> Change:
    """The circuit after one send outcome's ``signal``."""
    return TRANSITIONS[(c.state, signal)](c, now, policy)


class Admission(Frozen):
    """Whether a send may be handed to the adapter now.

    Attributes:
        allowed: Hand it over now.
        circuit: The circuit to store (a probe moves ``open`` to ``half_open``).
        until: Not allowed: the earliest time to ask again.
        probe: This send is the half-open probe.
    """

    allowed: bool
    circuit: Circuit
    until: UtcDatetime | None = None
    probe: bool = False


def admit(c: Circuit, now: datetime, *, policy: CircuitPolicy) -> Admission:
    """Ask the breaker before a hand-off (a new step's send or a deferred one re-issued)."""
    if c.state is CircuitState.CLOSED:
        return Admission(allowed=True, circuit=c)
    assert c.until is not None
    if now < c.until:
        return Admission(allowed=False, circuit=c, until=c.until)
    probing = c.model_copy(
        update={"state": CircuitState.HALF_OPEN, "until": now + policy.probe_timeout}
    )
    return Admission(allowed=True, circuit=probing, probe=True)

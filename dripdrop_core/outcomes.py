"""What a send's outcome does (SPEC §7 failure classes), as a table; failures never march on.

One row per ``dispatch-results`` status. The shell looks the status up, applies the row and
asks ``next_attempt`` when the same send must go again; it decides nothing itself.

=========  ==========  =========  ==========  ========  =============  ===============
status     enrollment  threads    next step   suppress  bounce rate    circuit signal
=========  ==========  =========  ==========  ========  =============  ===============
sent       —           yes        scheduled   no        —              success
bounced    bounced     no         never       yes       counts         success
failed     failed      no         never       no        —              —
retry      —           no         same again  no        —              success
deferred   —           no         same again  no        —              failure
ambiguous  holds       no         held        no        —              —
=========  ==========  =========  ==========  ========  =============  ===============

``retry`` (the recipient's server deferred this recipient, 4xx) goes again with back-off for
up to ``OutboundPolicy.recipient_retry_limit``, then fails the enrollment (``retry_expired``).
``deferred`` (the account or provider failed) goes again with back-off and no limit: a wrong
password costs no prospect a step; the circuit breaker holds the adapter meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from dripdrop_core.circuit import Signal
from dripdrop_core.enrollment import Event
from dripdrop_core.models import Frozen, UtcDatetime


class SendStatus(StrEnum):
    """The ``status`` of a ``dispatch-results`` record (``schemas/dispatch-results.avsc``)."""

    SENT = "sent"
    BOUNCED = "bounced"
    FAILED = "failed"
    RETRY = "retry"
    DEFERRED = "deferred"
    AMBIGUOUS = "ambiguous"


class OutcomeRule(Frozen):
    """One row of ``OUTCOMES``.

    Attributes:
        event: The enrollment event it causes (``dripdrop_core.enrollment``), if any.
        reason: The enrollment reason that goes with ``event``.
        reason_from_error: The reason is the result's error code instead (``failed``: the
            cause, e.g. ``header_injection``, is what an operator needs to see).
        threads: The send joins the thread (later steps reply to it).
        advances: The flow goes on to the next step.
        again: The same send (id, Message-ID) goes again later: ``recipient`` back-off
            with a time limit, ``adapter`` back-off without one.
        holds: The enrollment holds until an operator settles the send.
        suppress: The recipient is suppressed in the tenant.
        counts_bounce: Counts toward the adapter's bounce rate (may rest it).
        circuit: What it tells the adapter's circuit breaker.
    """

    event: Event | None = None
    reason: str | None = None
    reason_from_error: bool = False
    threads: bool = False
    advances: bool = False
    again: Literal["recipient", "adapter"] | None = None
    holds: bool = False
    suppress: bool = False
    counts_bounce: bool = False
    circuit: Signal | None = None


OUTCOMES: Mapping[SendStatus, OutcomeRule] = MappingProxyType(
    {
        SendStatus.SENT: OutcomeRule(threads=True, advances=True, circuit=Signal.SUCCESS),
        SendStatus.BOUNCED: OutcomeRule(
            event=Event.BOUNCE,
            reason="bounce",
            suppress=True,
            counts_bounce=True,
            circuit=Signal.SUCCESS,
        ),
        SendStatus.FAILED: OutcomeRule(
            event=Event.FAIL, reason="send_failed", reason_from_error=True
        ),
        SendStatus.RETRY: OutcomeRule(again="recipient", circuit=Signal.SUCCESS),
        SendStatus.DEFERRED: OutcomeRule(again="adapter", circuit=Signal.FAILURE),
        SendStatus.AMBIGUOUS: OutcomeRule(holds=True),
    }
)

RETRY_MAX_DOUBLINGS = 6
"""A send that goes again waits ``base × 2^n`` after its n-th consecutive try, up to ``× 64``."""


def outcome_rule(status: str) -> OutcomeRule:
    """The row of ``status``; an unknown status is a failure (never marched past).

    Raises:
        ValueError: ``status`` is not a ``SendStatus``.
    """
    return OUTCOMES[SendStatus(status)]


def retry_delay(base: timedelta, retries: int) -> timedelta:
    """How long a send that goes again waits after its ``retries``-th consecutive try."""
    return base * (1 << min(max(retries, 0), RETRY_MAX_DOUBLINGS))


class NextAttempt(Frozen):
    """When the same send goes again, or that it must not (the retry limit passed).

    Attributes:
        at: When to re-issue it (``None``: give up, the enrollment fails).
        reason: Why it gives up (``retry_expired``), when it does.
    """

    at: UtcDatetime | None
    reason: str | None = None


def next_attempt(
    rule: OutcomeRule,
    *,
    decided_at: datetime,
    retries: int,
    now: datetime,
    base: timedelta,
    retry_after: timedelta | None,
    limit: timedelta,
) -> NextAttempt:
    """The next try of a send whose outcome says ``again``.

    The back-off doubles per consecutive try; a provider's ``Retry-After`` is a floor. A
    recipient-level deferral gives up once ``limit`` has passed since the send was decided
    (SPEC §7: 24 h by default); an adapter-level one never does.
    """
    wait = retry_delay(base, retries)
    if retry_after is not None:
        wait = max(wait, retry_after)
    at = now + wait
    if rule.again == "recipient" and at - decided_at > limit:
        return NextAttempt(at=None, reason="retry_expired")
    return NextAttempt(at=at)


def holds_enrollment(status: str) -> bool:
    """Whether a send's outcome holds its enrollment: no later step until it is resolved.

    ``ambiguous`` (the worker died mid-hand-off, the connection broke during ``DATA``) means
    the prospect may or may not have the mail: a follow-up would thread under mail they
    may never have received, so nothing more is scheduled until an operator settles it
    (``dripdrop sends resolve``: sent, or not sent and re-issued).
    """
    return status in OUTCOMES and OUTCOMES[SendStatus(status)].holds

"""What the sender produces: the result records, the batch outcome, its database error,
and the classification of one send's provider outcome (exception → status)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.providers import UnknownProviderError
from streams.providers.base import (
    AmbiguousDeliveryError,
    OutboundEmail,
    Provider,
    ProviderError,
    RecipientDeferredError,
    RecipientRejectedError,
    TransientDeliveryError,
)

# The package's logger, named as before the split so log filters and handlers still match.
log = logging.getLogger("streams.sender")

Command = Mapping[str, Any]
"""A decoded ``dispatch`` record (``schemas/dispatch.avsc``)."""

DispatchResult = dict[str, Any]
"""A ``dispatch-results`` record (``schemas/dispatch-results.avsc``)."""


class SenderDatabaseError(Exception):
    """PostgreSQL failed; the whole batch may be retried (the ledger makes that safe).

    Attributes:
        results: outcomes of messages already delivered when the failure came while
            recording them. Publish them: a retried batch reports those rows
            ``ambiguous`` instead, because their outcome never reached the ledger.
    """

    code = "transient"

    def __init__(self, message: str, *, results: Sequence[DispatchResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What ``deliver`` did with each command of a batch.

    Attributes:
        results: ``dispatch-results`` records: rows sent, failed, or ambiguous (including
            rows found orphaned in ``sending``).
        cancelled: step execution ids not sent because the enrollment is no longer active.
        duplicates: ids already finished, or being sent right now by another worker.
        unknown: ids with no ledger row for the command's tenant (nothing done).
    """

    results: tuple[DispatchResult, ...]
    cancelled: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Delivery:
    status: str
    provider_message_id: str | None
    error: str | None
    finished_at: datetime
    retry_after_ms: int | None = None


def _retry_after_ms(exc: TransientDeliveryError) -> int | None:
    """The provider's requested wait (``Retry-After``), in milliseconds, if it gave one."""
    return None if exc.retry_after is None else int(exc.retry_after * 1000)


async def _send_one(
    command: Command, *, providers: Callable[[str], Provider], clock: Callable[[], datetime]
) -> _Delivery:
    """Send one claimed command; every outcome is a ``_Delivery``, never an exception."""
    try:
        email = OutboundEmail.from_command(command)
        provider = providers(str(command["adapter_id"]))
        # One try: a failure that took nothing goes back to the processor, which sends
        # the same again after a back-off of seconds to minutes (``dripdrop_core.outcomes``),
        # never a burst of tries within a second.
        provider_id = await provider.send(email)
    except RecipientDeferredError as exc:
        # This recipient's server said "later" (4xx at RCPT/DATA): the same send goes
        # again with back-off, up to the recipient retry limit (SPEC §7).
        return _Delivery("retry", None, str(exc), clock(), _retry_after_ms(exc))
    except TransientDeliveryError as exc:
        # Nothing was handed over and nothing is wrong with the recipient (an outage, a
        # refused connection, 421, a rejected login): the row goes back to ``intent`` and
        # the processor re-issues the same send later and counts it in the adapter's
        # circuit breaker; the step is never failed for it.
        return _Delivery("deferred", None, str(exc), clock(), _retry_after_ms(exc))
    except UnknownProviderError as exc:
        # Configuration, not the message: fixing the adapter fixes every held send.
        return _Delivery("deferred", None, str(exc), clock())
    except RecipientRejectedError as exc:
        return _Delivery("bounced", None, str(exc), clock())
    except AmbiguousDeliveryError as exc:
        return _Delivery("ambiguous", None, str(exc), clock())
    except ProviderError as exc:
        return _Delivery("failed", None, str(exc), clock())
    except LookupError as exc:
        # An adapter this worker does not know (yet: its config may still be on the
        # way): nothing was sent, and nothing is wrong with the message.
        return _Delivery("deferred", None, f"adapter_unknown: {exc}", clock())
    except TypeError as exc:
        # A malformed command: nothing was sent, and it would fail the same way again.
        return _Delivery("failed", None, f"undeliverable: {type(exc).__name__}", clock())
    except Exception as exc:  # noqa: BLE001 - a provider bug must still end the claim
        # The provider may have written to the network before failing: ambiguous, not
        # failed, so nobody resends it; the traceback goes to the log for the bug.
        log.exception("provider bug for step execution %s", command["step_execution_id"])
        return _Delivery("ambiguous", None, f"provider_bug: {type(exc).__name__}", clock())
    return _Delivery("sent", provider_id, None, clock())


def _result(command: Command, delivery: _Delivery) -> DispatchResult:
    event_id = str(command["event_id"])
    if delivery.status in ("retry", "deferred"):  # one per try; the outcome keeps the id
        event_id = f"{event_id}:retry:{int(delivery.finished_at.timestamp() * 1000)}"
    return {
        "event_id": event_id,
        "tenant_key": command["tenant_key"],
        "step_execution_id": str(command["step_execution_id"]),
        "enrollment_id": command.get("enrollment_id"),
        "adapter_id": command["adapter_id"],
        "attempt": command.get("attempt", 1),
        "status": delivery.status,
        "provider_message_id": delivery.provider_message_id,
        "error": delivery.error,
        "retry_after_ms": delivery.retry_after_ms,
        "finished_at": delivery.finished_at,
    }

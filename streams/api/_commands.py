"""The command half of ``DripDrop``: enrollments, inbound messages, ambiguous sends and
suppressions. Signatures and docstrings only (the documented API); each call delegates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

from streams.api._enrollments import EnrollmentCommands
from streams.api._inbound import InboundIngest
from streams.api._models import Accepted, Enrollment, InboundMessage
from streams.api._sends import AmbiguousSends
from streams.api._suppressions import SuppressionCommands
from streams.sends import AmbiguousSend, SendResolution
from streams.suppressions import ImportResult, Suppression


class CommandCalls:
    """Commands are produced to Kafka and acknowledged; their reads are here too.

    Holds no state: ``DripDrop.__init__`` sets the four collaborators.
    """

    _enrollments: EnrollmentCommands
    _inbound: InboundIngest
    _sends: AmbiguousSends
    _suppressions: SuppressionCommands

    # enrollment commands

    def enroll(
        self,
        *,
        tenant_key: str,
        sequence_id: str,
        subscriber_id: str,
        recipient: str,
        data: Mapping[str, Any] | None = None,
        recipient_timezone: str | None = None,
        sequence_version_id: str | None = None,
    ) -> Accepted:
        """Enroll a subscriber; returns the deterministic ``enrollment_id`` (idempotent).

        While the subscriber's enrollment in the sequence is live, or when it has finished and
        the sequence does not allow re-enrollment, this names that enrollment (the processor
        answers ``enrollment.duplicate``). When it has finished (as PostgreSQL shows it) and
        ``allow_reenrollment`` is set, this is a new enrollment with an id of its own: a new
        pin, thread and step executions (SPEC §7).

        Raises:
            NotFoundError / TenantMismatchError: unknown sequence or version.
            ConflictError: the sequence has no active version.
            InvalidInputError: bad recipient, timezone or data.
        """
        return self._enrollments.enroll(
            tenant_key=tenant_key,
            sequence_id=sequence_id,
            subscriber_id=subscriber_id,
            recipient=recipient,
            data=data,
            recipient_timezone=recipient_timezone,
            sequence_version_id=sequence_version_id,
        )

    def enroll_many(
        self,
        *,
        tenant_key: str,
        sequence_id: str,
        prospects: Iterable[Mapping[str, Any]],
        sequence_version_id: str | None = None,
    ) -> list[Accepted]:
        """Enroll many subscribers at once (a lead import): every prospect is checked first,
        then all are produced and acknowledged together, in order.

        Each prospect is a mapping with ``subscriber_id``, ``recipient`` and optionally
        ``data`` and ``recipient_timezone``, as ``enroll`` takes them. Nothing is produced
        when any prospect is invalid.

        Raises:
            InvalidInputError: a prospect is invalid (the message names its index).
            NotFoundError / TenantMismatchError / ConflictError: as ``enroll``.
        """
        return self._enrollments.enroll_many(
            tenant_key=tenant_key,
            sequence_id=sequence_id,
            prospects=prospects,
            sequence_version_id=sequence_version_id,
        )

    def pause_enrollment(
        self, enrollment_id: str, *, tenant_key: str, reason: str | None = None
    ) -> Accepted:
        return self._enrollments.enrollment_command(
            "pause", enrollment_id, tenant_key, reason=reason
        )

    def resume_enrollment(self, enrollment_id: str, *, tenant_key: str) -> Accepted:
        return self._enrollments.enrollment_command("resume", enrollment_id, tenant_key)

    def unenroll(
        self, enrollment_id: str, *, tenant_key: str, reason: str | None = None
    ) -> Accepted:
        return self._enrollments.enrollment_command(
            "unenroll", enrollment_id, tenant_key, reason=reason
        )

    def repin_enrollment(
        self, enrollment_id: str, *, tenant_key: str, new_adapter_id: str, reason: str | None = None
    ) -> Accepted:
        """Move an outbound enrollment to another member of its pool (breaks the thread).

        Raises:
            NotFoundError / TenantMismatchError: enrollment or adapter not the tenant's.
            ConflictError: not outbound, finished, adapter not an active pool member,
                adapter inactive (``adapter_inactive``) or resting (``adapter_resting``).
        """
        return self._enrollments.repin_enrollment(
            enrollment_id, tenant_key=tenant_key, new_adapter_id=new_adapter_id, reason=reason
        )

    def get_enrollment(self, enrollment_id: str, *, tenant_key: str) -> Enrollment:
        return self._enrollments.get_enrollment(enrollment_id, tenant_key=tenant_key)

    # inbound

    def ingest_inbound_message(
        self, adapter_id: str, message: Mapping[str, Any] | InboundMessage, *, tenant_key: str
    ) -> Accepted:
        """Hand one normalized inbound message to the processor (SPEC §8).

        Ids are normalized (trimmed, no angle brackets); the adapter must be the
        tenant's; an unknown intent is rejected here (the topic dead-letters it).
        """
        return self._inbound.ingest_inbound_message(adapter_id, message, tenant_key=tenant_key)

    # ambiguous sends (streams/sends.py)

    def list_ambiguous_sends(self, *, tenant_key: str | None = None) -> list[AmbiguousSend]:
        """Sends whose outcome is unknown, oldest first; ``None``: every tenant's (operator).

        Each holds its enrollment until ``resolve_ambiguous_send`` settles it.
        """
        return self._sends.list_ambiguous_sends(tenant_key=tenant_key)

    def resolve_ambiguous_send(
        self, step_execution_id: str, *, tenant_key: str, sent: bool
    ) -> SendResolution:
        """Settle an ambiguous send (SPEC §4, §7): ``sent=True`` marks it sent and lets the
        enrollment go on; ``sent=False`` re-issues it once, with the same Message-ID.

        Raises:
            NotFoundError: no such send in ``tenant_key`` (another tenant's id included).
            NotAmbiguousError: the send is not ambiguous.
            AlreadyReissuedError: ``sent=False`` on a send re-issued once already.
            ConflictError: ``sent=False`` while the enrollment is not active.
            PublishError: the broker did not acknowledge; nothing was settled.
        """
        return self._sends.resolve_ambiguous_send(
            step_execution_id, tenant_key=tenant_key, sent=sent
        )

    # suppression lists (streams/suppressions.py)

    def add_suppression(
        self,
        entry: str,
        *,
        tenant_key: str,
        reason: str = "manual",
        source: str = "api",
    ) -> Accepted:
        """Suppress an address (``a@b.com``) or a whole domain (``b.com`` / ``@b.com``).

        Refused at enrollment (``rejected``, reason ``suppressed``, no pin) and skipped at
        send from the moment the worker applies it. ``reason``: unsubscribe, bounce,
        complaint, manual, provider_block.

        Raises:
            InputError: not an address or domain, unknown reason, bad source.
            PublishError: the broker did not acknowledge; nothing changed.
        """
        return self._suppressions.add_suppression(
            entry, tenant_key=tenant_key, reason=reason, source=source
        )

    def import_suppressions(
        self,
        rows: Iterable[str | tuple[int, str, str | None, str | None]],
        *,
        tenant_key: str,
        reason: str = "manual",
        source: str = "import",
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Suppress many entries: plain strings, or ``(line, entry, reason, source)`` rows as
        ``streams.suppressions.read_csv`` yields them (a row's empty reason/source takes the
        defaults). Invalid entries are listed in the result; the rest are published.
        ``progress(accepted_so_far)`` is called after each batch the broker acknowledged."""
        return self._suppressions.import_suppressions(
            rows, tenant_key=tenant_key, reason=reason, source=source, progress=progress
        )

    def remove_suppression(self, entry: str, *, tenant_key: str) -> Accepted:
        """Take an address or domain off the tenant's list (later enrollments may send)."""
        return self._suppressions.remove_suppression(entry, tenant_key=tenant_key)

    def list_suppressions(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None = None
    ) -> list[Suppression]:
        """The tenant's entries, oldest first (as the worker has written them)."""
        return list(self._suppressions.iter_suppressions(tenant_key=tenant_key, kind=kind))

    def iter_suppressions(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None = None
    ) -> Iterator[Suppression]:
        """``list_suppressions`` streamed (for exports of large lists)."""
        return self._suppressions.iter_suppressions(tenant_key=tenant_key, kind=kind)

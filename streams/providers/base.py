"""The provider contract: one outbound email in, a provider message id out (SPEC §7).

Holds the value type, the ``Provider`` Protocol, the delivery error tree and the header
injection check every provider runs before it touches the network. No I/O here.

::

    ProviderError                  delivery failed; ``reason`` is a snake_case code
    ├── PermanentDeliveryError     will fail again (bad config, bad command)  → failed
    │   ├── HeaderInjectionError   CR/LF in an address or header (SPEC §7), never sent
    │   └── RecipientRejectedError hard recipient rejection (5xx at RCPT)     → bounced
    ├── TransientDeliveryError     nothing was handed over; the same send may be retried
    │   ├── AdapterFailureError    the account/provider failed (auth, TLS, 421,
    │   │                          refused connection, HTTP 401/403/429/5xx)  → deferred
    │   └── RecipientDeferredError this recipient deferred (4xx at RCPT/DATA)  → retry
    └── AmbiguousDeliveryError     the message may have been accepted: never resend

The arrows are the ``dispatch-results`` statuses (SPEC §7 failure classes); a bare
``TransientDeliveryError`` counts as an adapter failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

# Headers the provider writes itself from the envelope fields; a second copy in
# ``headers`` would let a template change who the message claims to be to or from.
RESERVED_HEADERS = frozenset({"from", "to", "cc", "bcc", "subject", "date"})


class ProviderError(Exception):
    """A delivery failure, already classified; messages carry codes, never addresses.

    Attributes:
        reason: snake_case code (``recipient_refused``, ``connect_failed``…).
        smtp_code: the server's reply code when there was one.
    """

    kind = "error"

    def __init__(self, reason: str, detail: str = "", *, smtp_code: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.smtp_code = smtp_code


class PermanentDeliveryError(ProviderError):
    """The provider refused the message for good; retrying would fail the same way."""

    kind = "permanent"


class HeaderInjectionError(PermanentDeliveryError):
    """An address, subject or header carries CR or LF; rejected before connecting."""


class RecipientRejectedError(PermanentDeliveryError):
    """The receiving side refused this recipient for good: a hard bounce.

    The processor suppresses the recipient, stops the enrollment and counts the bounce
    toward the adapter's bounce rate; nothing about the adapter is wrong.
    """

    kind = "bounce"


class TransientDeliveryError(ProviderError):
    """Nothing was handed over (connection refused, 4xx); the same send may be retried.

    Attributes:
        retry_after: seconds the provider asked us to wait (HTTP ``Retry-After``), if any.
    """

    kind = "transient"

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        smtp_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, detail, smtp_code=smtp_code)
        self.retry_after = retry_after


class AdapterFailureError(TransientDeliveryError):
    """The sending account or its provider failed; any recipient would fail the same way.

    Auth rejected, TLS failed, connection refused, 421, quota, HTTP 401/403/429/5xx. The
    step is deferred (never failed) and the adapter's circuit breaker counts it.
    """

    kind = "adapter"


class RecipientDeferredError(TransientDeliveryError):
    """The receiving side deferred this recipient (4xx at RCPT or DATA: greylisting, full).

    Retried with back-off for up to a day, then the step fails and the enrollment stops.
    """

    kind = "deferred"


class AmbiguousDeliveryError(ProviderError):
    """The connection broke after the message content was sent: it may have been accepted.

    The ledger marks such a send ``ambiguous`` and never resends it automatically.
    """

    kind = "ambiguous"


def _frozen_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(headers))


@dataclass(frozen=True, slots=True)
class OutboundEmail:
    """One email as the provider must send it; header values are stamped verbatim.

    ``headers`` holds RFC headers with their angle brackets (``Message-ID``,
    ``In-Reply-To``, ``References``, ``List-Unsubscribe``…), as in the ``dispatch`` topic.
    """

    from_address: str
    recipient: str
    subject: str
    body_text: str
    body_html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy: the caller's dict can change later without changing the email.
        object.__setattr__(self, "headers", _frozen_headers(self.headers))

    @classmethod
    def from_command(cls, command: Mapping[str, Any]) -> OutboundEmail:
        """Build the email of a decoded ``dispatch`` command (``schemas/dispatch.avsc``)."""
        return cls(
            from_address=command["from_address"],
            recipient=command["recipient"],
            subject=command["subject"],
            body_text=command["body_text"],
            body_html=command.get("body_html"),
            headers=command.get("headers") or {},
        )

    def header(self, name: str) -> str | None:
        """Return the value of ``name`` in ``headers``, matched case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@runtime_checkable
class Provider(Protocol):
    """A channel provider (SMTP, an ESP API, the in-memory fake)."""

    async def send(self, email: OutboundEmail) -> str:
        """Deliver ``email`` and return the provider's message id.

        Raises:
            PermanentDeliveryError: refused for good (includes ``HeaderInjectionError``).
            TransientDeliveryError: nothing was handed over; the send may be retried.
            AmbiguousDeliveryError: the outcome is unknown; never resend.
        """
        ...

    async def close(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...


def _has_line_break(value: str) -> bool:
    return "\r" in value or "\n" in value


def check_headers(email: OutboundEmail) -> None:
    """Reject an email whose addresses, subject or headers could inject headers (SPEC §7).

    Raises:
        HeaderInjectionError: CR or LF in a value, or a malformed header name.
        PermanentDeliveryError: a header that the provider owns (``From``, ``To``…).
    """
    for name, value in (
        ("from_address", email.from_address),
        ("recipient", email.recipient),
        ("subject", email.subject),
    ):
        if _has_line_break(value):
            raise HeaderInjectionError("header_injection", name)
    for name, value in email.headers.items():
        if not name or not name.isascii() or not name.isprintable() or ":" in name or " " in name:
            raise HeaderInjectionError("header_injection", "invalid header name")
        if _has_line_break(value):
            raise HeaderInjectionError("header_injection", name)
        if name.lower() in RESERVED_HEADERS:
            raise PermanentDeliveryError("reserved_header", name)

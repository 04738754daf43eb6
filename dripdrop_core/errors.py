"""The core's exception tree (style guide B4). Business outcomes are decisions, not errors.

::

    DripDropError            abstract root (direct construction raises TypeError)
    ├── InputError           bad API/CLI input → typed error to the caller
    │   ├── NotFoundError    unknown_adapter, unknown_pool…
    │   ├── TenantMismatchError
    │   └── ConflictError    class_mismatch, already_member, adapter_inactive…
    ├── RecordError          unprocessable input record → dead-letter
    │   ├── HeaderInjectionError   CR/LF in a header value (SPEC §7)
    │   └── MessageTooLargeError   a rendered message past limits.MAX_MESSAGE_BYTES
    └── InvariantError       our bug → dead-letter as ``bug``, alert, no retry

The core does no I/O, so it has no transient family: the shell decides transience at
its boundaries, once each (``streams/retrying.py`` for PostgreSQL, by SQLSTATE; the failure
classes of ``streams/providers/base.py`` for providers, each adapter translating its
library's errors ``from exc``).
"""

from __future__ import annotations

from typing import Any, Literal

ErrorCode = Literal[
    "input",
    "not_found",
    "unknown_adapter",
    "unknown_provider",
    "unknown_pool",
    "tenant_mismatch",
    "conflict",
    "class_mismatch",
    "invalid_weight",
    "adapter_inactive",
    "adapter_resting",
    "channel_mismatch",
    "record",
    "unknown_intent",
    "header_injection",
    "invalid_message_id",
    "no_message_id",
    "invalid_recipient",
    "not_outbound",
    "no_steps",
    "unknown_entity",
    "invalid_config",
    "state_too_large",
    "template_error",
    "message_too_large",
    "data_too_large",
    "not_ambiguous",
    "already_reissued",
    "invariant",
]


class DripDropError(Exception):
    """Root of every error the core raises; abstract, so raise a leaf instead."""

    code: ErrorCode = "invariant"

    def __new__(cls, *args: Any, **kwargs: Any) -> DripDropError:
        # h11 style: the root names a family, never a failure of its own.
        if cls is DripDropError:
            raise TypeError("DripDropError is abstract; raise a subclass")
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InputError(DripDropError):
    """Bad API or CLI input; the caller gets this typed error with a clear message."""

    code: ErrorCode = "input"


class NotFoundError(InputError):
    """A referenced row does not exist in the caller's tenant."""

    code: ErrorCode = "not_found"


class TenantMismatchError(InputError):
    """A call tried to combine rows of two tenants (SPEC §4)."""

    code: ErrorCode = "tenant_mismatch"


class ConflictError(InputError):
    """Valid shape, but it contradicts existing rows (``class_mismatch``…)."""

    code: ErrorCode = "conflict"


class RecordError(DripDropError):
    """An input record the processor cannot handle; it goes to the dead-letter topic."""

    code: ErrorCode = "record"


class HeaderInjectionError(RecordError):
    """A header value carries CR or LF; it is rejected, never sent (SPEC §7)."""

    code: ErrorCode = "header_injection"


class MessageTooLargeError(RecordError):
    """A rendered subject and bodies over ``limits.MAX_MESSAGE_BYTES``."""

    code: ErrorCode = "message_too_large"


class InvariantError(DripDropError):
    """The core was called in a state that its own rules make impossible: a bug."""

    code: ErrorCode = "invariant"

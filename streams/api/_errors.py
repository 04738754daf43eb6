"""The API's own error leaves (docs/api.md, "Errors"); the tree is ``dripdrop_core.errors``.

Re-exported by ``streams.api``; nothing else is defined here.
"""

from __future__ import annotations

from dripdrop_core.errors import ConflictError, InputError


class InvalidInputError(InputError):
    """A value has the wrong shape (pydantic validation, unknown field, CR/LF…)."""

    code = "input"


class ClassMismatchError(ConflictError):
    """An ESP provider added to a pool as ``mailbox`` (SPEC §5.1)."""

    code = "class_mismatch"


class PoolInUseError(ConflictError):
    """A pool that sequence versions still use cannot be deleted."""

    code = "conflict"


class NotPoolMemberError(ConflictError):
    """A repin target that is not an active member of the enrollment's pool."""

    code = "conflict"

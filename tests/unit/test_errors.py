from __future__ import annotations

import pytest

from dripdrop_core.errors import (
    ConflictError,
    DripDropError,
    HeaderInjectionError,
    InputError,
    InvariantError,
    MessageTooLargeError,
    NotFoundError,
    RecordError,
    TenantMismatchError,
)


def test_root_error_direct_construction_raises_type_error() -> None:
    with pytest.raises(TypeError):
        DripDropError("boom")


@pytest.mark.parametrize(
    ("cls", "parent", "code"),
    [
        (InputError, DripDropError, "input"),
        (NotFoundError, InputError, "not_found"),
        (TenantMismatchError, InputError, "tenant_mismatch"),
        (ConflictError, InputError, "conflict"),
        (RecordError, DripDropError, "record"),
        (HeaderInjectionError, RecordError, "header_injection"),
        (MessageTooLargeError, RecordError, "message_too_large"),
        (InvariantError, DripDropError, "invariant"),
    ],
)
def test_error_tree_leaves_carry_default_code(
    cls: type[DripDropError], parent: type[DripDropError], code: str
) -> None:
    error = cls("adapter a1")
    assert isinstance(error, parent) and error.code == code and str(error) == "adapter a1"


def test_error_explicit_code_overrides_default() -> None:
    assert NotFoundError("adapter a9", code="unknown_adapter").code == "unknown_adapter"

"""Whose a config change is (``config_ownership_error``): every way a record could reach
another tenant's entity is named, and the tenant's own changes pass."""

from __future__ import annotations

from typing import Any

import pytest

from dripdrop_core.config_sync import REFERENCES, config_entity_id, config_ownership_error

A, B = "tenant-a", "tenant-b"


def member(tenant: str = A, pool: str = "p1", adapter: str = "a1") -> dict[str, Any]:
    return {"pool_id": pool, "adapter_id": adapter, "tenant_key": tenant}


def test_own_changes_pass() -> None:
    adapter = {"id": "a1", "tenant_key": A}
    assert config_ownership_error(A, "adapter", "a1", adapter, None, {}) is None
    assert config_ownership_error(A, "adapter", "a1", adapter, A, {}) is None
    assert config_ownership_error(A, "adapter", "a1", None, A, {}) is None
    refs = {("pool", "p1"): A, ("adapter", "a1"): A}
    assert config_ownership_error(A, "pool_member", "p1:a1", member(), None, refs) is None


def test_unknown_references_are_not_a_breach() -> None:
    """Config may arrive in any order: a pool not seen yet is no reason to refuse."""
    refs = {("pool", "p1"): None, ("adapter", "a1"): None}
    assert config_ownership_error(A, "pool_member", "p1:a1", member(), None, refs) is None


@pytest.mark.parametrize(
    ("why", "args"),
    [
        ("overwrite", ("adapter", "a1", {"id": "a1", "tenant_key": B}, A, {})),
        ("delete", ("adapter", "a1", None, A, {})),
        ("payload of another tenant", ("adapter", "a1", {"id": "a1", "tenant_key": A}, None, {})),
        ("stored under another id", ("adapter", "a9", {"id": "a1", "tenant_key": B}, None, {})),
        (
            "member into another tenant's pool",
            ("pool_member", "p1:a1", member(B), None, {("pool", "p1"): A, ("adapter", "a1"): B}),
        ),
        (
            "another tenant's adapter into own pool",
            ("pool_member", "p1:a1", member(B), None, {("pool", "p1"): B, ("adapter", "a1"): A}),
        ),
        (
            "member stored under another pool's key",
            ("pool_member", "p9:a1", member(B), None, {}),
        ),
        (
            "step into another tenant's version",
            (
                "step",
                "s1",
                {"id": "s1", "tenant_key": B, "version_id": "v1"},
                None,
                {("sequence_version", "v1"): A},
            ),
        ),
        (
            "step through another tenant's adapter",
            (
                "step",
                "s1",
                {"id": "s1", "tenant_key": B, "version_id": "v1", "adapter_override_id": "a1"},
                None,
                {("sequence_version", "v1"): B, ("adapter", "a1"): A},
            ),
        ),
        (
            "version of another tenant's sequence",
            (
                "sequence_version",
                "v1",
                {"id": "v1", "tenant_key": B, "sequence_id": "q1", "pool_id": None},
                None,
                {("sequence", "q1"): A},
            ),
        ),
    ],
)
def test_cross_tenant_changes_are_named(why: str, args: tuple[Any, ...]) -> None:
    entity_type, entity_id, payload, previous, refs = args
    assert config_ownership_error(B, entity_type, entity_id, payload, previous, refs), why


def test_every_reference_field_is_an_entity_type_that_has_an_id() -> None:
    kinds = {kind for refs in REFERENCES.values() for kind, _ in refs}
    assert kinds <= {"adapter", "pool", "sequence", "sequence_version"}
    assert config_entity_id("pool_member", member()) == "p1:a1"
    assert config_entity_id("pool", {"id": "p1"}) == "p1"
    assert config_entity_id("pool", {}) is None

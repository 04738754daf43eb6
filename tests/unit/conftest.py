"""Builder fixtures for the pure core: ``<thing>_factory`` callables with defaults."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from dripdrop_core.models import Adapter, HealthState, Pool, PoolMember, Step

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def adapter_factory() -> Callable[..., Adapter]:
    def build(**overrides: Any) -> Adapter:
        fields: dict[str, Any] = {
            "id": "a1",
            "tenant_key": "t1",
            "name": "mailbox",
            "health_state": HealthState.ACTIVE,
            "from_address": "Sales <sales@Example.COM>",
        }
        fields.update(overrides)
        return Adapter(**fields)

    return build


@pytest.fixture
def member_factory() -> Callable[..., PoolMember]:
    def build(adapter_id: str = "a1", **overrides: Any) -> PoolMember:
        fields: dict[str, Any] = {"pool_id": "p1", "adapter_id": adapter_id, "tenant_key": "t1"}
        fields.update(overrides)
        return PoolMember(**fields)

    return build


@pytest.fixture
def pool_factory() -> Callable[..., Pool]:
    def build(**overrides: Any) -> Pool:
        fields: dict[str, Any] = {"id": "p1", "tenant_key": "t1", "name": "sales_pool"}
        fields.update(overrides)
        return Pool(**fields)

    return build


@pytest.fixture
def step_factory() -> Callable[..., Step]:
    def build(**overrides: Any) -> Step:
        fields: dict[str, Any] = {
            "id": "s1",
            "version_id": "v1",
            "tenant_key": "t1",
            "key": "intro",
            "position": 0,
        }
        fields.update(overrides)
        return Step(**fields)

    return build

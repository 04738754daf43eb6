"""ProviderRegistry.close at shutdown: every provider is closed, one failing does not stop
the others (its server may be gone by then)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.providers import ProviderRegistry


class _Closing:
    def __init__(self, fails: bool) -> None:
        self.fails, self.closed = fails, False

    async def close(self) -> None:
        self.closed = True
        if self.fails:
            raise ConnectionResetError("server gone")


def test_close_closes_every_provider_even_when_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    registry = ProviderRegistry()
    providers = [_Closing(fails=True), _Closing(fails=False)]
    stored: Any = registry
    stored._providers = {("a",): providers[0], ("b",): providers[1]}  # noqa: SLF001
    asyncio.run(registry.close())
    assert [p.closed for p in providers] == [True, True]
    assert "closing a _Closing provider failed: server gone" in caplog.text
    assert stored._providers == {}  # noqa: SLF001

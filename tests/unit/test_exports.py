"""``dripdrop_core.__all__`` is sorted and every name resolves (httpx's drift test)."""

from __future__ import annotations

import inspect

import dripdrop_core


def test_exports_all_sorted_unique_and_resolvable() -> None:
    names = dripdrop_core.__all__
    assert names == sorted(names) and len(set(names)) == len(names)
    for name in names:
        assert getattr(dripdrop_core, name) is not None


def test_exports_public_functions_documented() -> None:
    for name in dripdrop_core.__all__:
        value = getattr(dripdrop_core, name)
        if inspect.isfunction(value):
            assert value.__doc__, name

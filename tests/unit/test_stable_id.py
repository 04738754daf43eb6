"""``stable_id`` must stay byte-for-byte uuid5: ids written by earlier versions are keys."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from streams.processor.runtime import NAMESPACE, stable_id


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_stable_id_is_uuid5_of_the_joined_parts(parts: list[str]) -> None:
    assert stable_id(*parts) == str(uuid.uuid5(NAMESPACE, ":".join(parts)))


def test_stable_id_known_value() -> None:
    assert stable_id("exec", "e1", "s1", "0") == str(uuid.uuid5(NAMESPACE, "exec:e1:s1:0"))
    assert uuid.UUID(stable_id("x")).version == 5

"""The worker's source of one-click unsubscribe links (streams/one_click.py): the key by
reference, re-resolved after its time to live, and one log line when the links are off."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dripdrop_core.unsubscribe import OneClickLinks
from streams.one_click import OneClickSource
from streams.settings import Settings


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _settings(**fields: object) -> Settings:
    return Settings().model_copy(update=fields)


def test_source_with_key_file_and_url_gives_links_and_rereads_after_ttl(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("first-key")
    clock = _Clock()
    source = OneClickSource(
        _settings(
            unsubscribe_key=f"file:{key}",
            unsubscribe_base_url="https://u.example",
            unsubscribe_mailto="unsub@u.example",
        ),
        ttl_seconds=60,
        monotonic=clock,
    )
    assert source() == OneClickLinks(b"first-key", "https://u.example", "unsub@u.example")
    key.write_text("second-key")
    clock.now = 59
    assert source() is not None and source().key == b"first-key"  # type: ignore[union-attr]
    clock.now = 61
    assert source() == OneClickLinks(b"second-key", "https://u.example", "unsub@u.example")
    assert source.missing is None


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"unsubscribe_base_url": "https://u.example"}, "DRIPDROP_UNSUBSCRIBE_KEY is not set"),
        ({"unsubscribe_key": "env:DRIPDROP_TEST_NO_SUCH_KEY"}, "BASE_URL is not set"),
        (
            {
                "unsubscribe_key": "env:DRIPDROP_TEST_NO_SUCH_KEY",
                "unsubscribe_base_url": "https://u.example",
            },
            "DRIPDROP_TEST_NO_SUCH_KEY",
        ),
    ],
)
def test_source_without_key_or_url_gives_none_and_logs_once(
    fields: dict[str, object], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    source = OneClickSource(_settings(**fields), ttl_seconds=1, monotonic=clock)
    with caplog.at_level(logging.WARNING, logger="streams.one_click"):
        for step in range(5):
            clock.now = step * 2.0  # past the time to live every call: resolved again
            assert source() is None
    assert source.missing is not None and why in source.missing
    [record] = caplog.records
    assert why in record.getMessage()

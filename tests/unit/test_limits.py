from __future__ import annotations

import json

import pytest

from dripdrop_core.errors import MessageTooLargeError, RecordError
from dripdrop_core.limits import (
    MAX_DATA_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_RECIPIENT_CHARS,
    MAX_SUBSCRIBER_ID_CHARS,
    is_email_address,
    validate_data_size,
    validate_identity,
    validate_message_size,
)


def test_message_size_allows_the_limit_and_refuses_one_byte_more() -> None:
    validate_message_size("S", "b" * (MAX_MESSAGE_BYTES - 1))
    with pytest.raises(MessageTooLargeError) as info:
        validate_message_size("S", "b" * MAX_MESSAGE_BYTES)
    assert info.value.code == "message_too_large"
    assert "bbbb" not in str(info.value)
    with pytest.raises(MessageTooLargeError):  # UTF-8 bytes, not characters
        validate_message_size("", "é" * (MAX_MESSAGE_BYTES // 2 + 1))
    with pytest.raises(MessageTooLargeError):  # as JSON: each quote is escaped
        validate_message_size("", '"' * (MAX_MESSAGE_BYTES // 2 + 1))
    validate_message_size("", '"' * (MAX_MESSAGE_BYTES // 2 - 1))


def test_data_size_counts_the_json_bytes() -> None:
    at_limit = json.dumps({"k": "x" * (MAX_DATA_BYTES - len('{"k": ""}'))})
    assert len(at_limit) == MAX_DATA_BYTES
    validate_data_size(at_limit)
    with pytest.raises(RecordError) as info:
        validate_data_size(at_limit + " ")
    assert info.value.code == "data_too_large"


def test_identity_lengths_fit_postgresql_unique_indexes() -> None:
    address = "a" * (MAX_RECIPIENT_CHARS - len("@x.example")) + "@x.example"
    validate_identity("s" * MAX_SUBSCRIBER_ID_CHARS, address)
    with pytest.raises(RecordError) as info:
        validate_identity("s", "a" + address)
    assert info.value.code == "invalid_recipient"
    with pytest.raises(RecordError) as info:
        validate_identity("s" * (MAX_SUBSCRIBER_ID_CHARS + 1), address)
    assert info.value.code == "input"


def test_one_address_rule() -> None:
    good = ["ada@x.org", " ada@x.org ", "a.b+c@mail.example.co.uk", "o'neil@x.org"]
    bad = ["", "ada", "ada@", "@x.org", "ada@localhost", "a da@x.org", "ada@x org"]
    assert [is_email_address(v) for v in good] == [True] * len(good)
    assert [is_email_address(v) for v in bad] == [False] * len(bad)

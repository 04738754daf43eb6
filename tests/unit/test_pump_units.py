"""The pump's pure parts: the FETCH answer, the inbound config, records, shards."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.pump.config import InboundAdapter, inbound_imap
from streams.pump.imap import Fetched, inbound_record, message_id_of, parse_fetch
from streams.pump.service import in_shard

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "inbound"
PASSWORD = {"secret": "env:IMAP_PASSWORD"}


def test_parse_fetch_literal_lines_and_uid_after_literal() -> None:
    lines: list[bytes | bytearray] = [
        b'1 FETCH (UID 7 INTERNALDATE "03-Dec-2026 20:49:43 +0100" BODY[] {5}',
        bytearray(b"hello"),
        b")",
        b"2 FETCH (BODY[] {3}",
        bytearray(b"bye"),
        b' UID 9 INTERNALDATE "bad date")',
        b"3 FETCH (FLAGS (\\Seen))",  # an unsolicited update: no literal, skipped
        b"Fetch completed (0.001 + 0.000 secs).",
    ]
    assert parse_fetch(lines) == [
        Fetched(7, datetime(2026, 12, 3, 19, 49, 43, tzinfo=UTC), b"hello"),
        Fetched(9, None, b"bye"),
    ]


def test_inbound_config_requires_references_and_one_credential() -> None:
    base = {"host": "imap.example", "username": "u@example"}
    assert inbound_imap({}) is None
    cfg = inbound_imap({"inbound": {"imap": {**base, "password": PASSWORD}}})
    assert cfg is not None and cfg.folders == ("INBOX",) and cfg.security == "tls"
    with pytest.raises(ValidationError, match="secret reference"):
        inbound_imap({"inbound": {"imap": {**base, "password": "hunter2"}}})
    with pytest.raises(ValidationError, match="exactly one"):
        inbound_imap({"inbound": {"imap": base}})
    with pytest.raises(ValidationError, match="folders"):
        inbound_imap({"inbound": {"imap": {**base, "password": PASSWORD, "folders": ['a"b']}}})
    oauth = {
        "token_url": "http://127.0.0.1/token",
        "client_id": "c",
        "client_secret": PASSWORD,
        "refresh_token": PASSWORD,
    }
    assert inbound_imap({"inbound": {"imap": {**base, "oauth2": oauth}}}) is not None
    with pytest.raises(ValidationError, match="secret reference"):
        inbound_imap({"inbound": {"imap": {**base, "oauth2": {**oauth, "refresh_token": "x"}}}})


def test_inbound_record_classified_and_normalized() -> None:
    cfg = inbound_imap({"inbound": {"imap": {"host": "h", "username": "u", "password": PASSWORD}}})
    assert cfg is not None
    adapter = InboundAdapter(adapter_id="a-1", tenant_key="t-1", imap=cfg)
    raw = (CORPUS / "bounce" / "gmail_dsn_nouser.eml").read_bytes()
    now = datetime(2026, 3, 2, 18, tzinfo=UTC)
    record = inbound_record(adapter, Fetched(3, now, raw), now)
    assert (record["tenant_key"], record["adapter_id"], record["intent"]) == (
        "t-1",
        "a-1",
        "bounce",
    )
    assert record["intent_data"]["original_message_id"] == "0190f401@send.example.com"
    assert record["message_id"] == "65e3a1c3.050a0220.abcd.1234.GMR@mx.google.com"
    assert record["received_at"] == now and record["headers"]["subject"].startswith("Delivery")


def test_message_without_id_gets_a_stable_one() -> None:
    raw = b"From: a@x\r\nSubject: hi\r\n\r\nbody\r\n"
    assert message_id_of(raw, None) == message_id_of(raw, None)
    assert message_id_of(raw, None) != message_id_of(raw + b"!", None)
    assert message_id_of(raw, "m@x") == "m@x"


def test_shards_split_every_adapter_exactly_once() -> None:
    ids = [f"adapter-{i}" for i in range(200)]
    owners = [[k for k in range(3) if in_shard(a, (k, 3))] for a in ids]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == {0, 1, 2}
    assert all(in_shard(a, None) for a in ids)

"""Suppression entries and the CSV format (dripdrop_core.suppression, streams.suppressions)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from dripdrop_core.errors import InputError
from dripdrop_core.suppression import (
    SUPPRESSION_REASONS,
    SuppressionEntry,
    parse_entry,
    parse_reason,
    recipient_keys,
    suppression_key,
)
from streams.db.tables import SUPPRESSION_REASONS as TABLE_REASONS
from streams.suppressions import Suppression, as_rows, read_csv, write_csv


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Someone@Example.COM ", SuppressionEntry("address", "someone@example.com")),
        ("example.com", SuppressionEntry("domain", "@example.com")),
        ("@Sub.Example.co.uk", SuppressionEntry("domain", "@sub.example.co.uk")),
        (
            "first.last+tag@mail.example.org",
            SuppressionEntry("address", "first.last+tag@mail.example.org"),
        ),
    ],
)
def test_parse_entry_normalizes_addresses_and_domains(
    text: str, expected: SuppressionEntry
) -> None:
    assert parse_entry(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "nodot",
        "a@b",
        "two words@example.com",
        "a@exa mple.com",
        "x@\r\ny.com",
        "a@-bad.com",
        "x" * 400,
    ],
)
def test_parse_entry_refuses_what_is_neither(text: str) -> None:
    with pytest.raises(InputError, match="not an email address or domain"):
        parse_entry(text)


def test_reasons_match_the_table_constraint() -> None:
    assert SUPPRESSION_REASONS == TABLE_REASONS
    assert parse_reason(" Manual ") == "manual"
    with pytest.raises(InputError, match="unknown suppression reason"):
        parse_reason("because")


def test_a_recipient_is_suppressed_by_its_address_and_its_domain_in_its_tenant_only() -> None:
    address, domain = recipient_keys("t1", " Ann@Example.org")
    assert address == suppression_key("t1", "ann@example.org")
    assert domain == suppression_key("t1", "@example.org")
    assert suppression_key("t2", "ann@example.org") not in (address, domain)
    # A domain entry is that exact domain: a subdomain's recipient has other keys.
    assert suppression_key("t1", "@example.org") not in recipient_keys("t1", "b@mail.example.org")


def test_read_csv_with_header_reason_source_and_blank_lines() -> None:
    text = "Email,Reason,Source\nA@x.com,bounce,esp\n\nb.com,,\nnot an entry,manual,\n"
    assert list(read_csv(io.StringIO(text))) == [
        (2, "A@x.com", "bounce", "esp"),
        (4, "b.com", None, None),
        (5, "not an entry", "manual", None),
    ]


def test_read_csv_without_header_takes_entry_reason_source_in_order() -> None:
    assert list(read_csv(io.StringIO("a@x.com\nb@x.com,complaint\n"))) == [
        (1, "a@x.com", None, None),
        (2, "b@x.com", "complaint", None),
    ]
    assert list(read_csv(io.StringIO(""))) == []


def test_export_is_importable() -> None:
    at = datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    entries = [
        Suppression(
            tenant_key="t",
            entry="a@x.com",
            kind="address",
            reason="manual",
            source="cli",
            inserted_at=at,
        ),
        Suppression(
            tenant_key="t",
            entry="@y.com",
            kind="domain",
            reason="bounce",
            source=None,
            inserted_at=at,
        ),
    ]
    out = io.StringIO()
    assert write_csv(entries, out) == 2
    assert list(read_csv(io.StringIO(out.getvalue()))) == [
        (2, "a@x.com", "manual", "cli"),
        (3, "@y.com", "bounce", None),
    ]


def test_as_rows_numbers_plain_strings() -> None:
    assert list(as_rows(["a@x.com", (7, "b.com", "manual", None)])) == [
        (1, "a@x.com", None, None),
        (7, "b.com", "manual", None),
    ]

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

import pytest

from dripdrop_core.errors import HeaderInjectionError, RecordError
from dripdrop_core.mail_threads import (
    ThreadState,
    advance_thread,
    break_thread,
    derived_uuid7,
    new_message_id,
    sender_domain,
    thread_headers,
    validate_headers,
)

from .conftest import T0

SEED = UUID("0190f3c2-1111-7222-8333-444455556666")


def _send(
    thread: ThreadState, n: int, *, override: bool = False
) -> tuple[ThreadState, dict[str, str]]:
    mid = f"<m{n}@example.com>"
    headers = thread_headers(thread, is_override=override, message_id=mid)
    return advance_thread(thread, is_override=override, message_id=mid), headers


def test_derived_uuid7_same_inputs_same_id_version_7() -> None:
    first = derived_uuid7(SEED, T0)
    assert first == derived_uuid7(SEED, T0)
    assert first.version == 7 and first.variant == "specified in RFC 4122"
    assert first.int >> 80 == int(T0.timestamp() * 1000)
    assert derived_uuid7(UUID(int=1), T0) != first


def test_new_message_id_format_uuid7_at_sender_domain() -> None:
    mid = new_message_id(SEED, T0, "Sales <Sales@Example.COM>")
    assert re.fullmatch(
        r"<[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}@example\.com>", mid
    )
    assert new_message_id(SEED, T0, None).endswith("@dripdrop.local>")


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("a@b.io", "b.io"),
        ("Name <x@Y.org>", "y.org"),
        ("", "dripdrop.local"),
        ("no-at-sign", "dripdrop.local"),
    ],
)
def test_sender_domain_variants_lowercased_or_fallback(address: str, domain: str) -> None:
    assert sender_domain(address) == domain


def test_thread_main_chain_in_reply_to_previous_references_all() -> None:
    thread, first = _send(ThreadState(), 1)
    assert first == {"Message-ID": "<m1@example.com>"}
    thread, second = _send(thread, 2)
    thread, third = _send(thread, 3)
    assert second["In-Reply-To"] == "<m1@example.com>"
    assert third == {
        "Message-ID": "<m3@example.com>",
        "In-Reply-To": "<m2@example.com>",
        "References": "<m1@example.com> <m2@example.com>",
    }


def test_thread_override_step_new_thread_chain_skips_it() -> None:
    thread, _ = _send(ThreadState(), 1)
    thread, override = _send(thread, 2, override=True)
    assert override == {"Message-ID": "<m2@example.com>"}
    thread, after = _send(thread, 3)
    assert after["In-Reply-To"] == "<m1@example.com>"
    assert after["References"] == "<m1@example.com>"


@pytest.mark.parametrize("cause", ["reassign", "repin"])
def test_thread_break_after_sender_change_next_send_has_no_in_reply_to(cause: str) -> None:
    thread, _ = _send(ThreadState(), 1)
    thread, _ = _send(thread, 2)
    thread = break_thread(thread)
    thread, fresh = _send(thread, 3)
    assert fresh == {"Message-ID": "<m3@example.com>"}, cause
    _, next_one = _send(thread, 4)
    assert next_one["References"] == "<m3@example.com>"


def test_thread_state_json_round_trip() -> None:
    thread, _ = _send(ThreadState(), 1)
    assert ThreadState.model_validate(thread.model_dump(mode="json")) == thread


@pytest.mark.parametrize(
    "value",
    [
        "evil\r\nBcc: x@y.z",
        "a\nb",
        "a\rb",
        "a\x0bb",
        "a\x0cb",
        "a\x1cb",
        "a\x85b",
        "a\u2028b",
        "a\x00b",
    ],
)
def test_validate_headers_cr_or_lf_rejected(value: str) -> None:
    with pytest.raises(HeaderInjectionError) as info:
        validate_headers({"Subject": value})
    assert info.value.code == "header_injection"
    assert isinstance(info.value, RecordError)
    assert "evil" not in str(info.value)


def test_thread_headers_injected_message_id_rejected() -> None:
    with pytest.raises(HeaderInjectionError):
        thread_headers(ThreadState(), is_override=False, message_id="<a@b>\r\nBcc: x")


def test_derived_uuid7_millisecond_precision() -> None:
    at = datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
    assert (
        derived_uuid7(SEED, at).int >> 80
        == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000) + 999
    )


def test_line_breaks_are_exactly_what_splitlines_breaks_at_plus_nul() -> None:
    from dripdrop_core.mail_threads import LINE_BREAKS

    splitting = {chr(i) for i in range(0x110000) if len(f"a{chr(i)}b".splitlines()) > 1}
    assert splitting | {"\x00"} == LINE_BREAKS

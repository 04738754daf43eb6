from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from dripdrop_core.correlation import (
    IdCandidate,
    Intent,
    correlate,
    correlation_candidates,
    dedupe_key,
    index_key,
    intent_effect,
    normalize_message_id,
    parse_intent,
    split_references,
)
from dripdrop_core.enrollment import Event
from dripdrop_core.errors import RecordError
from dripdrop_core.models import ReplyBehavior
from dripdrop_core.reasons import Reason

from .conftest import T0


@pytest.mark.parametrize("raw", ["a@b", "<a@b>", "  <a@b>  ", "\t a@b \n", "< a@b >"])
def test_normalize_message_id_brackets_and_whitespace_stripped(raw: str) -> None:
    assert normalize_message_id(raw) == "a@b"


@pytest.mark.parametrize("raw", [None, "", "  ", "<>"])
def test_normalize_message_id_empty_returns_none(raw: str | None) -> None:
    assert normalize_message_id(raw) is None


def test_split_references_string_list_and_unspaced() -> None:
    assert split_references("<a@x> <b@x>\r\n <c@x>") == ("a@x", "b@x", "c@x")
    assert split_references("<a@x><b@x>") == ("a@x", "b@x")
    assert split_references(["a@x", " <b@x> "]) == ("a@x", "b@x")
    assert split_references(None) == ()


def test_correlation_candidates_order_in_reply_to_refs_newest_then_provider() -> None:
    found = correlation_candidates(
        " <r@x> ", "<a@x> <b@x> <r@x>", {"x-provider-message-id": "prov-1"}
    )
    assert found == (
        IdCandidate(kind="rfc", message_id="r@x"),
        IdCandidate(kind="rfc", message_id="b@x"),
        IdCandidate(kind="rfc", message_id="a@x"),
        IdCandidate(kind="provider", message_id="prov-1"),
    )


def test_correlate_unknown_in_reply_to_matches_through_references() -> None:
    index = {index_key("t1", "<old@x>"): "exec-1", index_key("t1", "<mid@x>"): "exec-2"}
    candidates = correlation_candidates("<unknown@client>", "<old@x> <mid@x>")
    hit = correlate("t1", candidates, index)
    assert hit == (IdCandidate(kind="rfc", message_id="mid@x"), "exec-2")


def test_correlate_other_tenant_never_matches() -> None:
    index = {index_key("t1", "<a@x>"): "exec-1"}
    assert correlate("t2", correlation_candidates("<a@x>", None), index) is None
    # Length prefixes keep "t:1"+"x" and "t"+"1:x" apart.
    assert index_key("t:1", "x") != index_key("t", "1:x")


def test_correlate_provider_id_fallback_matches() -> None:
    index = {index_key("t1", "prov-9", "provider"): "exec-9"}
    hit = correlate(
        "t1", correlation_candidates(None, None, {"X-Provider-Message-ID": "prov-9"}), index
    )
    assert hit is not None and hit[1] == "exec-9"


def test_dedupe_key_tenant_scoped_and_normalized() -> None:
    assert dedupe_key("t1", " <m@x> ") == dedupe_key("t1", "m@x")
    assert dedupe_key("t1", "m@x") != dedupe_key("t2", "m@x")


def test_parse_intent_unknown_raises_record_error() -> None:
    assert parse_intent(" Reply ") is Intent.REPLY
    with pytest.raises(RecordError) as info:
        parse_intent("vacation")
    assert info.value.code == "unknown_intent"


@pytest.mark.parametrize(
    ("behavior", "state", "cancel"),
    [
        (ReplyBehavior.STOP, Event.REPLY, True),
        (ReplyBehavior.PAUSE, Event.PAUSE, False),
        (ReplyBehavior.CONTINUE, None, False),
    ],
)
def test_intent_effect_reply_follows_step_behavior(
    behavior: ReplyBehavior, state: Event | None, cancel: bool
) -> None:
    effect = intent_effect(Intent.REPLY, reply_behavior=behavior, now=T0)
    assert (effect.enrollment_event, effect.cancel_pending, effect.suppress) == (
        state,
        cancel,
        False,
    )


@pytest.mark.parametrize(
    ("intent", "signal", "event"),
    [
        (Intent.BOUNCE, "bounce", Event.BOUNCE),
        (Intent.COMPLAINT, "complaint", Event.STOP),
        (Intent.UNSUBSCRIBE, None, Event.STOP),
    ],
)
def test_intent_effect_negative_suppresses_and_stops(
    intent: Intent, signal: str | None, event: Event
) -> None:
    effect = intent_effect(intent, now=T0)
    assert effect.suppress and effect.cancel_pending
    assert effect.enrollment_event is event
    assert effect.health_signal == signal


def test_intent_effect_ooo_with_return_date_defers_to_recipient_morning() -> None:
    effect = intent_effect(
        Intent.OOO, ooo_return=date(2026, 12, 7), recipient_timezone="America/New_York", now=T0
    )
    assert effect.enrollment_event is None and effect.reason is Reason.OUT_OF_OFFICE
    assert effect.resume_at == datetime(2026, 12, 7, 14, tzinfo=UTC)
    assert intent_effect(Intent.AUTO_REPLY, now=T0).enrollment_event is None
    assert intent_effect(Intent.OOO, now=T0).resume_at is None

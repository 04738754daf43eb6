"""The participants fallback (SPEC §8, issue 13 item 4): a reply whose client dropped
In-Reply-To and References is correlated to the last live enrollment its adapter sent to
the reply's ``From``, marked ``matched_by=participants``; never a report, never a stopped
enrollment, never another address, never when the setting is off."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dripdrop_core.correlation import participant_address, participant_key
from dripdrop_core.policy import OutboundPolicy
from streams.processor import inbound
from streams.processor.flow import Processor
from streams.processor.store import DictStore
from tests.agents.test_processor import T0, TENANT, first_step_sent, world


def bare_reply(
    p: Processor, w: dict[str, Any], sender: str, *, intent: str = "reply", n: int = 1
) -> Any:
    """An inbound message with no id to correlate by."""
    return inbound.on_inbound(
        p,
        {
            "tenant_key": TENANT,
            "adapter_id": w["adapter"],
            "message_id": f"<bare-{n}@client.example>",
            "in_reply_to": None,
            "references": [],
            "headers": {},
            "intent": intent,
            "from": sender,
            "subject": "about your note",
        },
        T0 + timedelta(hours=1, seconds=n),
        0,
    )


def matched(out: Any) -> list[str]:
    return [
        t["attributes"]["matched_by"]
        for t in out.telemetry
        if t["name"] == "ingest.inbound_message"
    ]


def state(out: Any) -> str | None:
    rows = [op["row"] for op in out.urgent if op["op"] == "enrollment"]
    return rows[-1]["state"] if rows else None


def test_a_reply_without_ids_from_the_recipient_stops_its_enrollment() -> None:
    p = Processor(DictStore(), OutboundPolicy())
    w = world(p, steps=2)
    first_step_sent(p, w)
    out = bare_reply(p, w, '"Prospect Zero" <P0@X.org>')
    assert matched(out) == ["participants"]
    assert state(out) == "replied"
    # Stopped: a second bare reply finds no live enrollment.
    again = bare_reply(p, w, "p0@x.org", n=2)
    assert matched(again) == []
    assert [t["name"] for t in again.telemetry] == ["ingest.unmatched"]


@pytest.mark.parametrize(
    ("sender", "intent"),
    [
        ("someone.else@x.org", "reply"),  # not a recipient of this adapter
        ("p0@x.org", "bounce"),  # a report names its send inside, never by From
        ("p0@x.org", "complaint"),
        ("not an address", "reply"),
    ],
)
def test_others_and_reports_are_not_matched_by_participants(sender: str, intent: str) -> None:
    p = Processor(DictStore(), OutboundPolicy())
    w = world(p, steps=2)
    first_step_sent(p, w)
    out = bare_reply(p, w, sender, intent=intent)
    assert matched(out) == []
    assert state(out) is None


def test_the_fallback_can_be_turned_off() -> None:
    p = Processor(DictStore(), OutboundPolicy(correlate_participants=False))
    w = world(p, steps=2)
    first_step_sent(p, w)
    assert matched(bare_reply(p, w, "p0@x.org")) == []


def test_keys_are_tenant_and_adapter_scoped_and_case_blind() -> None:
    assert participant_address("Ann <Ann@Example.ORG>") == "ann@example.org"
    assert participant_address("nobody") is None
    assert participant_address(None) is None
    assert participant_key("t", "a", "Ann@X.org") == participant_key("t", "a", "ann@x.org")
    assert participant_key("t", "a", "x@y") != participant_key("t", "b", "x@y")
    assert participant_key("t1", "a", "x@y") != participant_key("t", "1a", "x@y")

"""One-click unsubscribe on the processor's sends (RFC 8058, SPEC §13), on dict tables.

Opted-in versions (lifecycle by default, outbound when the version says so) stamp
``List-Unsubscribe`` / ``List-Unsubscribe-Post`` and give templates ``{{ unsubscribe_url }}``;
the others do not. Without links (no key) the sends go out bare, reported once.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.unsubscribe import ONE_CLICK, OneClickLinks, Unsubscribe, read_token
from streams.processor import commands, config_changes
from streams.processor.flow import Processor
from streams.processor.store import DictStore
from tests.agents.test_processor import T0, TENANT, claims

KEY = b"agent-test-key"
LINKS = OneClickLinks(key=KEY, base_url="https://u.example", mailto="unsub@u.example")


def _config(p: Processor, entity_type: str, entity_id: str, payload: dict[str, Any]) -> None:
    change = {
        "tenant_key": TENANT,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "deleted": False,
        "payload": json.dumps({"tenant_key": TENANT, **payload}),
    }
    config_changes.on_config(p, change, T0, 0)


def _sequence(p: Processor, mode: str, one_click: bool | None, body: str) -> str:
    """A one-step sequence of ``mode`` through one memory adapter; returns its id."""
    adapter, pool, seq, ver, step = (str(uuid.uuid4()) for _ in range(5))
    _config(
        p,
        "adapter",
        adapter,
        {
            "id": adapter,
            "name": "m",
            "provider": "memory",
            "from_address": "m@x.example",
            "health_state": "active",
        },
    )
    version: dict[str, Any] = {"id": ver, "sequence_id": seq, "version": 1, "mode": mode}
    if mode == "outbound":
        _config(p, "pool", pool, {"id": pool, "name": "p"})
        _config(p, "pool_member", f"{pool}:{adapter}", {"pool_id": pool, "adapter_id": adapter})
        version["pool_id"] = pool
    if one_click is not None:
        version["one_click_unsubscribe"] = one_click
    _config(p, "sequence", seq, {"id": seq, "key": f"k-{seq}", "name": "n"})
    _config(p, "sequence_version", ver, version)
    step_fields: dict[str, Any] = {
        "id": step,
        "version_id": ver,
        "key": "s0",
        "position": 0,
        "subject_template": "Hi",
        "body_template": body,
    }
    if mode == "lifecycle":
        step_fields["adapter_id"] = adapter
    _config(p, "step", step, step_fields)
    return seq


def _first_send(p: Processor, seq: str, recipient: str = "ann@x.org") -> tuple[Any, str]:
    enrollment_id = str(uuid.uuid4())
    out = commands.on_enrollment_command(
        p,
        {
            "command": "enroll",
            "tenant_key": TENANT,
            "enrollment_id": enrollment_id,
            "sequence_id": seq,
            "subscriber_id": recipient,
            "recipient": recipient,
            "data": "{}",
        },
        T0,
        0,
    )
    return out, enrollment_id


@pytest.fixture
def processor() -> Processor:
    p = Processor(DictStore(), OutboundPolicy())
    p.one_click = lambda: LINKS
    return p


@pytest.mark.parametrize(
    ("mode", "setting"), [("lifecycle", None), ("outbound", True), ("lifecycle", True)]
)
def test_opted_in_send_carries_the_header_pair_and_the_template_link(
    processor: Processor, mode: str, setting: bool | None
) -> None:
    seq = _sequence(processor, mode, setting, "Bye: {{ unsubscribe_url }}")
    out, enrollment_id = _first_send(processor, seq)
    (claim,) = claims(out)
    headers = claim["command"]["headers"]
    assert headers["List-Unsubscribe-Post"] == ONE_CLICK
    url = headers["List-Unsubscribe"].split(">")[0].removeprefix("<")
    assert url.startswith("https://u.example/u/")
    assert ", <mailto:unsub@u.example?subject=unsubscribe%20" in headers["List-Unsubscribe"]
    assert read_token(KEY, url.rsplit("/", 1)[1]) == Unsubscribe(TENANT, enrollment_id, "ann@x.org")
    assert claim["command"]["body_text"] == f"Bye: {url}"


@pytest.mark.parametrize(("mode", "setting"), [("outbound", None), ("lifecycle", False)])
def test_send_of_a_version_not_opted_in_has_no_unsubscribe_headers(
    processor: Processor, mode: str, setting: bool | None
) -> None:
    seq = _sequence(processor, mode, setting, "plain")
    out, _ = _first_send(processor, seq)
    (claim,) = claims(out)
    assert not {"List-Unsubscribe", "List-Unsubscribe-Post"} & set(claim["command"]["headers"])
    assert not [t for t in out.telemetry if t["name"].startswith("unsubscribe.")]


def test_without_links_sends_go_out_without_headers_and_it_is_reported_once() -> None:
    p = Processor(DictStore(), OutboundPolicy())  # no source set: no key
    seq = _sequence(p, "lifecycle", None, "plain")
    outs = [_first_send(p, seq, f"r{i}@x.org")[0] for i in range(3)]
    sent = claims(*outs)
    assert len(sent) == 3
    assert all("List-Unsubscribe" not in c["command"]["headers"] for c in sent)
    reported = [t for o in outs for t in o.telemetry if t["name"].startswith("unsubscribe.")]
    assert [t["name"] for t in reported] == ["unsubscribe.links_unavailable"]


def test_a_base_url_with_a_line_break_fails_the_enrollment_never_sends(
    processor: Processor,
) -> None:
    processor.one_click = lambda: OneClickLinks(key=KEY, base_url="https://u.example/\r\nBcc: x")
    seq = _sequence(processor, "lifecycle", None, "plain")
    out, enrollment_id = _first_send(processor, seq)
    assert claims(out) == []
    rejected = [t for t in out.telemetry if t["name"] == "dispatch.rejected"]
    assert rejected and rejected[0]["attributes"]["reason"] == "header_injection"
    e = processor.enrollment(enrollment_id)
    assert e is not None and str(e.state) == "failed"

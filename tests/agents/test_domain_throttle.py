"""Recipient-domain throttles on the processor's sends, on dict tables (SPEC §13).

Over the limit a send is deferred with reason ``domain_throttle`` to the exact start of
the next UTC hour, where the next ones go; other domains and other adapters' throttles
are not touched; a tenant-wide throttle counts the sends of all the tenant's adapters.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from dripdrop_core.policy import OutboundPolicy
from streams.processor import commands, config_changes
from streams.processor.flow import Processor
from streams.processor.store import DictStore
from tests.agents.test_processor import T0, TENANT, claims, world


def _throttle(p: Processor, domain: str, *, adapter_id: str | None = None, **limits: int) -> str:
    throttle = str(uuid.uuid4())
    payload = {"id": throttle, "tenant_key": TENANT, "domain": domain, "adapter_id": adapter_id}
    change = {
        "tenant_key": TENANT,
        "entity_type": "domain_throttle",
        "entity_id": throttle,
        "deleted": False,
        "payload": json.dumps({**payload, **limits}),
    }
    config_changes.on_config(p, change, T0, 0)
    return throttle


def _enroll(p: Processor, w: dict[str, Any], recipients: list[str]) -> list[Any]:
    return [
        commands.on_enrollment_command(
            p,
            {
                "command": "enroll",
                "tenant_key": TENANT,
                "enrollment_id": str(uuid.uuid4()),
                "sequence_id": w["sequence"],
                "subscriber_id": r,
                "recipient": r,
                "data": json.dumps({"name": "Ada"}),
            },
            T0,
            0,
        )
        for r in recipients
    ]


def _recipients(out: Any) -> list[str]:
    return sorted(c["command"]["recipient"] for c in claims(out))


def test_sends_over_the_hourly_limit_wait_for_the_next_hour() -> None:
    p = Processor(DictStore(), OutboundPolicy())
    w = world(p, steps=1)
    _throttle(p, "gmail.com", per_hour=2)
    _throttle(p, "gmail.com", adapter_id=str(uuid.uuid4()), per_hour=1)  # another adapter's
    gmail = [f"g{i}@gmail.com" for i in range(5)]
    outs = _enroll(p, w, [*gmail, "ann@example.org"])

    first = _recipients(outs[0]) + [r for out in outs[1:] for r in _recipients(out)]
    assert sorted(first) == ["ann@example.org", "g0@gmail.com", "g1@gmail.com"]
    deferred = [
        t["attributes"] for out in outs for t in out.telemetry if t["name"] == "dispatch.deferred"
    ]
    next_hour = T0.replace(minute=0) + timedelta(hours=1)
    assert [(d["reason"], d["until"]) for d in deferred] == [
        ("domain_throttle", next_hour.isoformat())
    ] * 3

    assert _recipients(p.on_tick(0, next_hour - timedelta(minutes=1))) == []
    assert _recipients(p.on_tick(0, next_hour)) == ["g2@gmail.com", "g3@gmail.com"]
    assert _recipients(p.on_tick(0, next_hour + timedelta(hours=1))) == ["g4@gmail.com"]


def test_a_tenant_wide_throttle_counts_every_adapter_and_an_adapters_only_its_own() -> None:
    p = Processor(DictStore(), OutboundPolicy())
    first, second = world(p, steps=1), world(p, steps=1)  # two pools, an adapter each
    _throttle(p, "gmail.com", per_hour=3)
    _throttle(p, "gmail.com", adapter_id=first["adapter"], per_hour=1)

    sent = [
        c["command"]["adapter_id"]
        for w, prefix in ((first, "f"), (second, "s"))
        for out in _enroll(p, w, [f"{prefix}{i}@gmail.com" for i in range(3)])
        for c in claims(out)
    ]

    assert sorted(sent) == sorted([first["adapter"], second["adapter"], second["adapter"]])

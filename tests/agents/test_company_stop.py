"""The company-level stop on dict tables (SPEC §13).

A human reply on one enrollment of an opted-in version stops the tenant's other live
enrollments to the same company domain whose versions opted in too
(``enrollment.company_stopped``); other domains, free-mail domains, versions that did not
opt in and automatic replies (out of office) stop nobody else.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from dripdrop_core.company import company_domain
from dripdrop_core.models import EnrollmentState
from dripdrop_core.policy import OutboundPolicy
from streams.processor import commands, inbound
from streams.processor.company import freemail
from streams.processor.flow import Processor
from streams.processor.store import DictStore
from tests.agents.test_processor import T0, TENANT, _config, claims, world


def _opt_in(p: Processor, w: dict[str, Any]) -> dict[str, Any]:
    version = p.config.active_version(w["sequence"])
    assert version is not None
    payload = {**version.model_dump(mode="json"), "company_stop": True}
    _config(p, "sequence_version", version.id, payload)
    return w


def _sent(p: Processor, w: dict[str, Any], recipient: str) -> dict[str, Any]:
    """Enroll ``recipient`` and report its first send delivered; return the command."""
    out = commands.on_enrollment_command(
        p,
        {
            "command": "enroll",
            "tenant_key": TENANT,
            "enrollment_id": str(uuid.uuid4()),
            "sequence_id": w["sequence"],
            "subscriber_id": recipient,
            "recipient": recipient,
            "data": json.dumps({"name": "Ada"}),
        },
        T0,
        0,
    )
    command: dict[str, Any] = claims(out)[0]["command"]
    p.on_result(
        {
            "enrollment_id": command["enrollment_id"],
            "status": "sent",
            "step_execution_id": command["step_execution_id"],
        },
        T0,
        0,
    )
    return command


def _reply(p: Processor, w: dict[str, Any], command: dict[str, Any], intent: str = "reply") -> Any:
    return inbound.on_inbound(
        p,
        {
            "tenant_key": TENANT,
            "adapter_id": w["adapter"],
            "message_id": f"<{uuid.uuid4()}@mail.example>",
            "in_reply_to": command["headers"]["Message-ID"],
            "references": [],
            "headers": {},
            "intent": intent,
            "from": command["recipient"],
            "subject": "Re",
        },
        T0,
        0,
    )


def _state(p: Processor, command: dict[str, Any]) -> tuple[EnrollmentState, str | None]:
    e = p.enrollment(command["enrollment_id"])
    assert e is not None
    return e.state, e.reason


@pytest.fixture
def p() -> Processor:
    return Processor(DictStore(), OutboundPolicy())


def test_a_reply_stops_the_colleagues_of_opted_in_versions_only(p: Processor) -> None:
    opted, plain = _opt_in(p, world(p)), world(p)
    ann, bob, cy = (_sent(p, opted, r) for r in ("ann@acme.com", "bob@acme.com", "cy@other.com"))
    fay = _sent(p, plain, "fay@acme.com")

    out = _reply(p, opted, ann)

    assert _state(p, ann) == (EnrollmentState.REPLIED, "reply")
    assert _state(p, bob) == (EnrollmentState.STOPPED, "company_stopped")
    assert _state(p, cy)[0] is EnrollmentState.ACTIVE
    assert _state(p, fay)[0] is EnrollmentState.ACTIVE
    stopped = [t["attributes"] for t in out.telemetry if t["name"] == "enrollment.company_stopped"]
    assert stopped == [
        {
            "enrollment_id": bob["enrollment_id"],
            "reason": "company_stopped",
            "domain": "acme.com",
            "replied_enrollment_id": ann["enrollment_id"],
        }
    ]


def test_free_mail_domains_and_automatic_replies_stop_nobody_else(p: Processor) -> None:
    opted = _opt_in(p, world(p))
    dan, eve = _sent(p, opted, "dan@gmail.com"), _sent(p, opted, "eve@gmail.com")
    ann, bob = _sent(p, opted, "ann@acme.com"), _sent(p, opted, "bob@acme.com")

    _reply(p, opted, dan)
    _reply(p, opted, ann, intent="ooo")

    assert _state(p, dan)[0] is EnrollmentState.REPLIED
    assert _state(p, eve)[0] is EnrollmentState.ACTIVE
    assert _state(p, bob)[0] is EnrollmentState.ACTIVE


def test_the_free_mail_list_is_loaded_and_extended() -> None:
    names = freemail()
    assert {"gmail.com", "outlook.com", "yahoo.com", "mailinator.com"} <= names
    assert len(names) > 10_000
    assert company_domain("Ann <Ann@Acme.COM>", names) == "acme.com"
    assert company_domain("ann@gmail.com", names) is None
    assert company_domain("ann@proton.me", names) is None  # EXTRA_FREEMAIL
    assert company_domain("not an address", names) is None

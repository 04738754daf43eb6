"""What one send is made of: its adapter, content and headers, the sink's claim, the
throttle counters it counts in, its circuit admission and the correlation index entries.

Building blocks of ``dispatching`` and ``redrive``; no decision of whether to send is here.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

from dripdrop_core.circuit import CircuitPolicy, admit
from dripdrop_core.correlation import index_key, normalize_message_id, participant_key
from dripdrop_core.lifecycle import RotationState, choose_lifecycle_adapter
from dripdrop_core.limits import validate_message_size
from dripdrop_core.mail_threads import thread_headers, validate_headers
from dripdrop_core.models import Adapter, Mode, Step
from dripdrop_core.ramp import local_day
from dripdrop_core.reasons import Reason
from dripdrop_core.state import AdapterState
from dripdrop_core.suppression import recipient_domain
from dripdrop_core.throttles import ThrottleCounter, Throttled, count_send
from dripdrop_core.throttles import applies as throttle_applies
from dripdrop_core.unsubscribe import OneClick, OneClickLinks, is_one_click_on, one_click
from streams.processor import keys
from streams.processor.render import Rendered, render_step
from streams.processor.rows import claim_op_of, execution_ref
from streams.processor.runtime import EnrollmentRuntime, Outputs, stable_id
from streams.processor.state import Tables
from streams.processor.store import Config


class Composer:
    """The headers and content of a send, with one-click unsubscribe when opted in."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # The one-click unsubscribe links of opted-in sends (SPEC §13); the composition root
        # (streams/worker.py) sets a source that resolves the key. ``None``: no headers.
        self.one_click: Callable[[], OneClickLinks | None] = lambda: None
        self._one_click_reported = False

    def compose(
        self,
        e: EnrollmentRuntime,
        step: Step,
        *,
        is_override: bool,
        message_id: str,
        now: datetime,
        out: Outputs,
    ) -> tuple[dict[str, str], Rendered]:
        """The headers and content of a send: threading headers, the one-click
        unsubscribe headers and ``{{ unsubscribe_url }}`` when the version has them on.

        Raises:
            DripDropError: a header with a line break, a template that cannot render.
        """
        headers = thread_headers(e.thread, is_override=is_override, message_id=message_id)
        data = e.data
        link = self._one_click_for(e, now, out)
        if link is not None:
            validate_headers(link.headers)
            headers = {**headers, **link.headers}
            data = {**e.data, "unsubscribe_url": link.url}
        return headers, render_step(step, data)

    def compose_checked(
        self,
        e: EnrollmentRuntime,
        step: Step,
        adapter: Adapter,
        *,
        is_override: bool,
        message_id: str,
        now: datetime,
        out: Outputs,
    ) -> tuple[dict[str, str], Rendered]:
        """``compose``, then the size and header limits of a first issue.

        Raises:
            DripDropError: as ``compose``; a message over the size limit; a bad header.
        """
        headers, content = self.compose(
            e, step, is_override=is_override, message_id=message_id, now=now, out=out
        )
        validate_message_size(content.subject, content.text, content.html)
        validate_headers(
            {"Subject": content.subject, "To": e.recipient, "From": adapter.from_address or ""}
        )
        return headers, content

    def _one_click_for(self, e: EnrollmentRuntime, now: datetime, out: Outputs) -> OneClick | None:
        version = self.config.version(e.version_id)
        if version is None or not is_one_click_on(version):
            return None
        links = self.one_click()
        if links is None:
            if not self._one_click_reported:  # once per process: the log says why
                self._one_click_reported = True
                out.emit(
                    "unsubscribe.links_unavailable",
                    e.tenant_key,
                    now,
                    enrollment_id=e.id,
                    detail="sends go out without List-Unsubscribe: no key or base URL",
                )
            return None
        return one_click(links, e.tenant_key, e.id, e.recipient)


def execution_id(e: EnrollmentRuntime, step: Step) -> str:
    return stable_id("exec", e.id, step.id, str(e.attempt))


def adapter_for(tables: Tables, e: EnrollmentRuntime, step: Step) -> Adapter | None:
    """The adapter of ``e``'s step: its pin (or the step's override), or the tenant's
    lifecycle rotation's next choice."""
    if e.mode is Mode.OUTBOUND:
        return tables.config.adapter(step.adapter_override_id or e.adapter_id)
    rotation_key = keys.rotation(e.tenant_key)
    rotation = RotationState.model_validate(tables.index.get(rotation_key) or {})
    new_rotation, choice = choose_lifecycle_adapter(
        step, tables.config.tenant_adapters(e.tenant_key), rotation
    )
    if new_rotation != rotation:
        tables.index[rotation_key] = new_rotation.model_dump(mode="json")
    return tables.config.adapter(choice.adapter_id)


def throttles(
    tables: Tables, e: EnrollmentRuntime, adapter: Adapter | None
) -> tuple[Throttled, ...]:
    """The recipient-domain throttles over this send, with their counters (SPEC §13)."""
    if adapter is None:
        return ()
    domain = recipient_domain(e.recipient)
    return tuple(
        Throttled(
            throttle=t,
            counter=ThrottleCounter.model_validate(
                tables.index.get(keys.domain_throttle(t.id)) or {}
            ),
        )
        for t in tables.config.throttles(e.tenant_key, domain)
        if throttle_applies(t, domain, adapter.id)
    )


def count_throttled(
    index: MutableMapping[str, Any], throttled: tuple[Throttled, ...], at: datetime
) -> None:
    for t in throttled:
        index[keys.domain_throttle(t.throttle.id)] = count_send(t.counter, at).model_dump(
            mode="json"
        )


def is_gap_turn(e: EnrollmentRuntime, now: datetime, lookahead: timedelta) -> bool:
    """``e`` waited for the minimum gap and its slot has come (it is woken for it)."""
    last = e.last_decision
    return (
        last is not None
        and last.kind == "defer"
        and last.reason == str(Reason.GAP)
        and last.until is not None
        and last.until - lookahead <= now
    )


def claim_op(
    e: EnrollmentRuntime,
    step: Step,
    adapter: Adapter,
    exec_id: str,
    headers: dict[str, str],
    content: Rendered,
    cap: int | None,
    now: datetime,
    *,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """The sink's claim of one send decided ``now``; the sender hands it over no earlier
    than ``not_before`` (default ``now``)."""
    command = {
        "event_id": f"{exec_id}:{e.attempt + 1}",
        "tenant_key": e.tenant_key,
        "step_execution_id": exec_id,
        "enrollment_id": e.id,
        "step_id": step.id,
        "adapter_id": adapter.id,
        "channel": step.channel,
        "recipient": e.recipient,
        "from_address": adapter.from_address or "",
        "subject": content.subject,
        "body_text": content.text,
        "body_html": content.html,
        "headers": headers,
        "idempotency_key": exec_id,
        "attempt": e.attempt + 1,
        "decided_at": now,
        "not_before": not_before or now,
    }
    guard = {
        "adapter_id": adapter.id,
        "tenant_key": e.tenant_key,
        "day": local_day(adapter.timezone, now).isoformat(),
        "cap": cap,
        "gap_seconds": adapter.min_gap_seconds,
        "at": now.isoformat(),
    }
    return claim_op_of(command, guard)


def admitted(
    adapter: Adapter, state: AdapterState, now: datetime, out: Outputs, *, policy: CircuitPolicy
) -> AdapterState:
    """The adapter's state once a send it admitted goes out: a send through an open
    circuit whose cool-down ended is its probe (the circuit is then half-open)."""
    admission = admit(state.circuit, now, policy=policy)
    if not admission.probe:
        return state
    out.emit("provider.circuit_probe", adapter.tenant_key, now, adapter_id=adapter.id)
    return state.model_copy(update={"circuit": admission.circuit})


def index_message_id(
    index: MutableMapping[str, Any],
    e: EnrollmentRuntime,
    message_id: str,
    *,
    participants: bool,
    only_if_missing: bool = False,
) -> None:
    """Map the Message-ID of ``e``'s pending send to the execution itself, so a reply
    or a bounce finds it in one read (one changelog record per id); with ``participants``
    (``OutboundPolicy.correlate_participants``) also its sender and recipient."""
    rfc = normalize_message_id(message_id) or message_id
    key = index_key(e.tenant_key, rfc, "rfc")
    if only_if_missing and index.get(key) is not None:
        return
    ref = execution_ref(e)
    index[key] = ref
    if participants and e.pending is not None:
        # The reply of a client that drops In-Reply-To and References (SPEC §8).
        index[participant_key(e.tenant_key, e.pending.adapter_id, e.recipient)] = ref

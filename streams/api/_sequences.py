"""Sequences, their versions and steps: what an enrollment follows.

Authoring calls: validate, write PostgreSQL and the outbox in one transaction, then relay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from dripdrop_core.errors import ConflictError
from dripdrop_core.models import (
    DelayFrom,
    Mode,
    ReplyBehavior,
    SendingWindow,
    SequenceVersion,
    Step,
)
from dripdrop_core.models import Sequence as SequenceModel
from streams.api._context import Context
from streams.api._errors import InvalidInputError
from streams.api._validation import check_no_newline, check_nonempty, validated
from streams.db import authoring as repo
from streams.processor.render import template_errors


@dataclass(frozen=True, slots=True)
class _VersionOptions:
    """A version's ``config`` with its checked options (the keyword arguments merged in)."""

    config: dict[str, Any]
    company_stop: bool
    one_click_unsubscribe: bool | None
    pool_id: str | None
    max_wait_seconds: int | None


def _version_options(
    config: Mapping[str, Any] | None,
    *,
    one_click_unsubscribe: bool | None,
    company_stop: bool | None,
) -> _VersionOptions:
    merged = dict(config or {})
    if one_click_unsubscribe is not None:
        merged["one_click_unsubscribe"] = one_click_unsubscribe
    if company_stop is not None:
        merged["company_stop"] = company_stop
    stop_company = merged.get("company_stop", False)
    if not isinstance(stop_company, bool):
        raise InvalidInputError("config.company_stop must be true or false")
    one_click = merged.get("one_click_unsubscribe")
    if one_click is not None and not isinstance(one_click, bool):
        raise InvalidInputError("config.one_click_unsubscribe must be true or false")
    raw_pool = merged.get("pool_id")
    if raw_pool is not None and not isinstance(raw_pool, str):
        raise InvalidInputError("config.pool_id must be a string id")
    max_wait = merged.get("max_wait_seconds")
    if max_wait is not None and (
        isinstance(max_wait, bool) or not isinstance(max_wait, int) or max_wait <= 0
    ):
        raise InvalidInputError("config.max_wait_seconds must be a positive whole number")
    return _VersionOptions(merged, stop_company, one_click, raw_pool, max_wait)


class SequenceAuthoring:
    """The sequence, version and step calls of ``DripDrop``."""

    def __init__(self, context: Context) -> None:
        self._ctx = context

    def create_sequence(
        self, *, tenant_key: str, key: str, name: str | None, allow_reenrollment: bool
    ) -> SequenceModel:
        check_nonempty("tenant_key", tenant_key)
        check_nonempty("key", key)
        sequence = validated(
            SequenceModel,
            {
                "id": repo.new_id(),
                "tenant_key": tenant_key,
                "key": key,
                "name": name or key,
                "allow_reenrollment": allow_reenrollment,
            },
        )
        with self._ctx.engine.begin() as conn:
            repo.insert_sequence(conn, sequence)
            self._ctx.config(conn, "sequence", sequence.id, tenant_key, sequence)
        self._ctx.after_commit()
        return sequence

    def create_sequence_version(
        self,
        sequence_id: str,
        *,
        tenant_key: str,
        version: int,
        mode: Mode | str,
        config: Mapping[str, Any] | None,
        active: bool,
        one_click_unsubscribe: bool | None,
        company_stop: bool | None,
    ) -> SequenceVersion:
        options = _version_options(
            config, one_click_unsubscribe=one_click_unsubscribe, company_stop=company_stop
        )
        with self._ctx.engine.begin() as conn:
            sequence = repo.sequence_from_row(
                repo.load_owned(conn, "sequence", sequence_id, tenant_key)
            )
            candidate = validated(
                SequenceVersion,
                {
                    "id": repo.new_id(),
                    "sequence_id": sequence.id,
                    "tenant_key": tenant_key,
                    "version": version,
                    "mode": mode,
                    "pool_id": None,
                    "active": active,
                    "max_wait_seconds": options.max_wait_seconds,
                    "one_click_unsubscribe": options.one_click_unsubscribe,
                    "company_stop": options.company_stop,
                },
            )
            pool_id: str | None = None
            if candidate.mode is Mode.OUTBOUND:
                if options.pool_id is None:
                    raise InvalidInputError(
                        "an outbound version requires config.pool_id", code="input"
                    )
                pool_id = repo.pool_from_row(
                    repo.load_owned(conn, "pool", options.pool_id, tenant_key)
                ).id
                options.config["pool_id"] = pool_id
            elif options.pool_id is not None or options.max_wait_seconds is not None:
                raise InvalidInputError(
                    "config.pool_id and config.max_wait_seconds are only for outbound versions"
                )
            created = candidate.model_copy(update={"pool_id": pool_id})
            repo.insert_version(conn, created, options.config)
            self._ctx.config(conn, "sequence_version", created.id, tenant_key, created)
        self._ctx.after_commit()
        return created

    def create_step(
        self,
        version_id: str,
        *,
        tenant_key: str,
        key: str,
        position: int,
        channel: str,
        delay_seconds: int,
        delay_from: DelayFrom | str,
        subject_template: str,
        body_template: str,
        html_template: str | None,
        adapter_id: str | None,
        adapter_override_id: str | None,
        reply_behavior: ReplyBehavior | str,
        sending_window: SendingWindow | Mapping[str, int] | tuple[int, int] | None,
        thread_continuity: bool,
    ) -> Step:
        check_nonempty("key", key)
        check_no_newline("subject_template", subject_template)
        if isinstance(sending_window, tuple):
            sending_window = {"start_hour": sending_window[0], "end_hour": sending_window[1]}
        with self._ctx.engine.begin() as conn:
            version = repo.version_from_row(
                repo.load_owned(conn, "sequence_version", version_id, tenant_key)
            )
            _check_step_adapters(
                conn,
                version,
                tenant_key=tenant_key,
                channel=channel,
                adapter_id=adapter_id,
                adapter_override_id=adapter_override_id,
            )
            step = validated(
                Step,
                {
                    "id": repo.new_id(),
                    "version_id": version.id,
                    "tenant_key": tenant_key,
                    "key": key,
                    "position": position,
                    "channel": channel,
                    "delay_seconds": delay_seconds,
                    "delay_from": delay_from,
                    "subject_template": subject_template,
                    "body_template": body_template,
                    "html_template": html_template,
                    "adapter_id": adapter_id,
                    "adapter_override_id": adapter_override_id,
                    "reply_behavior": reply_behavior,
                    "sending_window": sending_window,
                    "thread_continuity": thread_continuity,
                },
            )
            errors = template_errors(step)
            if errors:
                raise InvalidInputError("template does not compile: " + "; ".join(errors))
            repo.insert_step(conn, step)
            self._ctx.config(conn, "step", step.id, tenant_key, step)
        self._ctx.after_commit()
        return step


def _check_step_adapters(
    conn: Connection,
    version: SequenceVersion,
    *,
    tenant_key: str,
    channel: str,
    adapter_id: str | None,
    adapter_override_id: str | None,
) -> None:
    """The step's adapter fits its version's mode, is the tenant's and sends on its channel."""
    if version.mode is Mode.OUTBOUND and adapter_id is not None:
        raise InvalidInputError(
            "outbound steps send through the pinned adapter; use adapter_override_id"
        )
    if version.mode is Mode.LIFECYCLE and adapter_override_id is not None:
        raise InvalidInputError("adapter_override_id is only for outbound versions")
    for field, ref in (
        ("adapter_id", adapter_id),
        ("adapter_override_id", adapter_override_id),
    ):
        if ref is None:
            continue
        adapter = repo.adapter_from_row(repo.load_owned(conn, "adapter", ref, tenant_key))
        if adapter.channel != channel:
            raise ConflictError(
                f"{field} {adapter.id} sends on {adapter.channel}, the step on {channel}",
                code="channel_mismatch",
            )

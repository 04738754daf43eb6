"""Reason codes carried by every decision and health transition (SPEC §5, §10).

Codes are snake_case, valid Avro enum symbols, and never change meaning once
released. Nothing but the enum lives here.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a decision or transition happened; shown by ``explain`` and telemetry."""

    # dispatch
    READY = "ready"
    CAP = "cap"
    GAP = "gap"
    RESTING = "resting"
    PAUSED = "paused"
    OUTSIDE_SENDING_WINDOW = "outside_sending_window"  # was quiet_hours (SPEC §13)
    SUPPRESSED = "suppressed"
    ENROLLMENT_INACTIVE = "enrollment_inactive"
    CIRCUIT_OPEN = "circuit_open"
    DOMAIN_THROTTLE = "domain_throttle"
    # eligibility / pool policy
    ELIGIBLE = "eligible"
    POOL_EXHAUSTED = "pool_exhausted"
    CAPACITY = "capacity"
    CAPACITY_WAIT_EXPIRED = "capacity_wait_expired"
    ADAPTER_INACTIVE = "adapter_inactive"
    ADAPTER_MISSING = "adapter_missing"
    MEMBER_INACTIVE = "member_inactive"
    NOT_MEMBER = "not_member"
    CHANNEL_MISMATCH = "channel_mismatch"
    HEALTH_UNMANAGED = "health_unmanaged"
    NO_HEADROOM = "no_headroom"
    RESTING_BEYOND_HORIZON = "resting_beyond_horizon"
    OVERRIDE_UNAVAILABLE = "override_unavailable"
    PIN_UNAVAILABLE = "pin_unavailable"
    PINNED = "pinned"
    REASSIGNED = "reassigned"
    REPINNED = "repinned"
    MIXED_CLASSES = "mixed_classes"
    NO_ADAPTER = "no_adapter"
    STEP_ADAPTER = "step_adapter"
    ROTATION = "rotation"
    # health
    BOUNCE_THRESHOLD = "bounce_threshold"
    COMPLAINT_THRESHOLD = "complaint_threshold"
    RESTING_ELAPSED = "resting_elapsed"
    PROBE_CLEAN = "probe_clean"
    PROBE_BREACH = "probe_breach"
    EXTERNAL_SIGNAL = "external_signal"
    NO_TRANSITION = "no_transition"
    # inbound
    REPLY = "reply"
    OUT_OF_OFFICE = "out_of_office"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"

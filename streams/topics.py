"""The one registry of DripDrop's topics (SPEC §3, docs/topics.md): names without the
prefix, and which of them each part of the system reads. Every list of topics in the
code base comes from here (``Settings.topic(name)`` adds the prefix).

Every topic has the same partition count and is keyed (or partitioned) by tenant, so one
tenant's records of every topic meet on one partition number: the processor's state of
that tenant lives there.
"""

from __future__ import annotations

PUBLIC = (
    "enrollments",
    "inbound-messages",
    "health-signals",
    "config",
    "dispatch",
    "dispatch-results",
    "telemetry",
    "message-events",
    "dead-letter",
)
"""The public topics hosts produce onto or consume (Avro schemas in ``schemas/``)."""

INTERNAL = ("ticks", "sink", "sink-feedback", "ping")
"""Topics only the workers use; created with the public ones so co-partitioning holds."""

ALL = (*PUBLIC, *INTERNAL)

HOST_INPUTS = ("enrollments", "inbound-messages", "health-signals", "config")
"""What hosts (and the API's outbox) produce and the processor consumes: the input
surface the fuzz and tenancy sweeps cover."""

PROCESSOR_INPUTS = (*HOST_INPUTS, "dispatch-results", "ticks", "sink-feedback")
"""The processor agent's source topics."""

COMPACTED = frozenset({"config"})
"""Topics created with ``cleanup.policy=compact`` (the latest version of each entity)."""

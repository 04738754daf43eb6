"""Every key format of the ``index`` table, in one place (issue 15).

The ``index`` table holds several kinds of small records side by side; each kind has its
own prefix so they never collide, and each prefix is written here only. The formats the
core owns (correlation and suppression keys, pure functions of ids) are re-exported so a
reader finds them all in this module. The ``schedule`` table's keys are the due index's
(``schedule.py``), the ``config`` table's are ``{entity_type}:{id}`` (``store.Config``).
"""

from __future__ import annotations

from dripdrop_core.correlation import dedupe_key as inbound_seen
from dripdrop_core.correlation import index_key as message
from dripdrop_core.correlation import participant_key as participant
from dripdrop_core.suppression import suppression_key as suppression

__all__ = [
    "cursor",
    "domain_throttle",
    "inbound_seen",
    "legacy_execution",
    "message",
    "parked",
    "participant",
    "rotation",
    "suppression",
    "waiting_chunk",
    "waiting_pools",
    "waiting_queue",
]


def cursor(partition: int) -> str:
    """The due index's cursor of ``partition``: the last bucket fired and dropped."""
    return f"cursor:{partition}"


def rotation(tenant_key: str) -> str:
    """The tenant's lifecycle rotation state (which adapter sends next)."""
    return f"rot:{tenant_key}"


def domain_throttle(throttle_id: str) -> str:
    """A domain throttle's send counter (``dripdrop_core.throttles``)."""
    return f"dt:{throttle_id}"


def waiting_queue(pool_id: str) -> str:
    """A pool's capacity queue: its head and tail chunk numbers."""
    return f"wq:{pool_id}"


def waiting_chunk(pool_id: str, n: int) -> str:
    """Chunk ``n`` of a pool's capacity queue (enrollment ids, first in first out)."""
    return f"wq:{pool_id}:{n}"


def waiting_pools(partition: int) -> str:
    """The pools of ``partition`` with enrollments waiting for capacity."""
    return f"wq-pools:{partition}"


def parked(partition: int) -> str:
    """Records of ``partition`` waiting for the config they name (``streams/parking.py``)."""
    return f"parked:{partition}"


def legacy_execution(step_execution_id: str) -> str:
    """A correlation record stored apart by earlier versions (read, never written)."""
    return f"exec:{step_execution_id}"

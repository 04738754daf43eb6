"""A work-around for a faust-streaming 0.15.3 bug that skips input (pinned in pyproject).

faust-streaming issue #596: at the end of a table recovery,
``Recovery.on_recovery_completed`` resumes the stream partitions and only then seeks them
to their committed offsets. Flow control is already resumed and the Fetcher already runs,
so records fetched in between are delivered, the seek then moves the read offset back,
and records of that window can be dropped for good (measured here: 358-511 of 1,900
suppressions never applied in 3 of 5 crash runs). The processor's continuity guard
(``streams/pipeline.py``) detects such a skip and restarts uncommitted; this fix removes
the window: while ``on_recovery_completed`` runs, resuming a stream partition waits for
the seek, so nothing is fetched before the partition is at its committed offset.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faust.tables.recovery import Recovery
from faust.types import TP

_ORIGINAL: Callable[..., Awaitable[None]] | None = None


async def _seek_before_resume(self: Recovery, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` with the stream partitions resumed after the seek."""
    assert _ORIGINAL is not None
    consumer: Any = self.app.consumer
    resume = consumer.resume_partitions
    seek = consumer.perform_seek
    held: set[TP] = set()

    def resume_after_seek(tps: Iterable[TP]) -> None:
        held.update(tps)

    async def seek_then_resume() -> None:
        await seek()
        resume(set(held))
        held.clear()

    consumer.resume_partitions = resume_after_seek
    consumer.perform_seek = seek_then_resume
    try:
        await _ORIGINAL(self, generation_id)
    finally:
        del consumer.resume_partitions  # the class's own methods again
        del consumer.perform_seek
        if held:  # no seek happened (empty assignment, or it failed): as Faust would
            resume(held)


def install() -> None:
    """Patch ``Recovery.on_recovery_completed`` once per process (``create_app`` calls it)."""
    global _ORIGINAL
    if _ORIGINAL is None:
        _ORIGINAL = Recovery.on_recovery_completed
        Recovery.on_recovery_completed = _seek_before_resume  # type: ignore[method-assign]

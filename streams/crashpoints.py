"""Named crash points, for the durability tests only.

A test that must kill a worker *at* an instruction (not somewhere near it) starts the
worker with ``DRIPDROP_HARNESS_CRASH_AT=name`` (or ``name:N``, the N-th time the point is
reached); the worker then SIGKILLs itself there: no ``finally``, no flush, no commit, as a
power cut. Unset (always, outside the harness) a crash point is one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "DRIPDROP_HARNESS_CRASH_AT"
POINTS = (
    "checkpoint.before_changelog",
    "checkpoint.changelog_in_flight",
    "checkpoint.before_store",
    "checkpoint.before_offset_commit",
)
"""Every point the worker marks; the harness refuses any other name."""
PUMP_POINTS = ("pump.before_cursor_save", "sends.reissue_committed", "sends.sent_published")
"""The pump's (``dripdrop pump``): Kafka acknowledged, cursor not saved (streams/pump/imap.py);
a re-issue committed ``intent`` and not yet published, a ``sent`` result acknowledged and the
row not yet committed (``streams/sends.py``, the Sent-folder check)."""

log = logging.getLogger("dripdrop.crashpoints")


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    if name not in POINTS + PUMP_POINTS:
        known = ", ".join(POINTS + PUMP_POINTS)
        raise ValueError(f"{ENV}={spec!r}: unknown crash point (known: {known})")
    return name, int(nth or 1)


_TARGET = _target()
_hits = 0


def reached(name: str) -> None:
    """SIGKILL this process if the harness asked for a crash at ``name`` (this time)."""
    global _hits
    if _TARGET is None or _TARGET[0] != name:
        return
    _hits += 1
    if _hits >= _TARGET[1]:
        log.critical("crash point %s reached (%d): SIGKILL", name, _hits)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)

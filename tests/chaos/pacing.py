"""Cap and gap checks of the chaos reconciliation, and the hand-off spacing statistic.

Pure functions over what the harness collected (ledger rows, SMTP receive times), so the
rules are unit-tested on their own (``tests/unit/test_chaos_pacing.py``):

* no adapter decided more sends on one adapter-local day than its cap;
* no two decided sends of one adapter closer than its ``min_gap_seconds``;
* the spacing of hand-offs at the SMTP server per adapter (min, p1, median): reported,
  never failed on; the sender does not space hand-offs yet (issue 12 item 4).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Decided:
    """One decided send (a ledger row that was sent or is ambiguous)."""

    step_execution_id: str
    adapter_id: str
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class Spacing:
    """Intervals between consecutive events of one adapter, in (simulated) seconds."""

    count: int
    minimum: float
    p1: float
    median: float

    def text(self) -> str:
        return f"min {self.minimum:.3f} s, p1 {self.p1:.3f} s, median {self.median:.3f} s"


def cap_violations(
    sends: Iterable[Decided], caps: Mapping[str, int], timezones: Mapping[str, str]
) -> list[str]:
    """Per adapter and adapter-local day of ``decided_at``: sends ≤ the adapter's cap."""
    per_day: Counter[tuple[str, str]] = Counter()
    for s in sends:
        day = s.decided_at.astimezone(ZoneInfo(timezones.get(s.adapter_id, "UTC"))).date()
        per_day[(s.adapter_id, day.isoformat())] += 1
    return [
        f"over_cap: adapter {adapter} decided {n} sends on local day {day}, cap {caps[adapter]}"
        for (adapter, day), n in sorted(per_day.items())
        if adapter in caps and n > caps[adapter]
    ]


def gap_violations(sends: Iterable[Decided], gaps: Mapping[str, int]) -> list[str]:
    """Consecutive decided sends of one adapter at least its ``min_gap_seconds`` apart."""
    out: list[str] = []
    for adapter, group in _by_adapter(sends).items():
        gap = gaps.get(adapter, 0)
        if gap <= 0:
            continue
        for before, after in zip(group, group[1:], strict=False):
            seconds = (after.decided_at - before.decided_at).total_seconds()
            if seconds < gap:
                out.append(
                    f"min_gap: adapter {adapter}: {before.step_execution_id} and"
                    f" {after.step_execution_id} decided {seconds:.3f} s apart, minimum {gap} s"
                )
    return out


def gap_bound(sends: Iterable[Decided], gaps: Mapping[str, int]) -> int:
    """Consecutive decided pairs less than two gaps apart: how often the gap constrained a
    decision (0 would mean the check tested nothing)."""
    bound = 0
    for adapter, group in _by_adapter(sends).items():
        gap = gaps.get(adapter, 0)
        for before, after in zip(group, group[1:], strict=False):
            bound += gap > 0 and (after.decided_at - before.decided_at).total_seconds() < 2 * gap
    return bound


def spacing(times: Sequence[float], *, scale: float = 1.0) -> Spacing | None:
    """Min, 1st percentile (nearest rank) and median of the intervals between ``times``
    (seconds, any order), multiplied by ``scale`` (real → simulated seconds)."""
    ordered = sorted(times)
    gaps = sorted((b - a) * scale for a, b in zip(ordered, ordered[1:], strict=False))
    if not gaps:
        return None
    n = len(gaps)
    p1 = gaps[max(0, -(-n // 100) - 1)]
    median = gaps[n // 2] if n % 2 else (gaps[n // 2 - 1] + gaps[n // 2]) / 2
    return Spacing(count=n, minimum=gaps[0], p1=p1, median=median)


def _by_adapter(sends: Iterable[Decided]) -> dict[str, list[Decided]]:
    groups: dict[str, list[Decided]] = defaultdict(list)
    for s in sends:
        groups[s.adapter_id].append(s)
    for group in groups.values():
        group.sort(key=lambda s: (s.decided_at, s.step_execution_id))
    return groups

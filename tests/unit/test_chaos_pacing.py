"""The chaos reconciliation's cap and gap rules and the hand-off spacing statistic
(tests/chaos/pacing.py), on hand-built sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.chaos.pacing import Decided, cap_violations, gap_bound, gap_violations, spacing

T0 = datetime(2026, 12, 4, 0, 0, tzinfo=UTC)


def sends(*offsets: float, adapter: str = "a1") -> list[Decided]:
    return [
        Decided(f"{adapter}-{i}", adapter, T0 + timedelta(seconds=s)) for i, s in enumerate(offsets)
    ]


def test_cap_counts_per_adapter_local_day() -> None:
    # 23:00 and 23:30 UTC on 4 Dec are 5 Dec in Europe/Berlin: two local days of 2 and 2.
    day = sends(3600, 7200, 23 * 3600, 23.5 * 3600)
    assert cap_violations(day, {"a1": 2}, {"a1": "Europe/Berlin"}) == []
    assert len(cap_violations(day, {"a1": 3}, {"a1": "UTC"})) == 1
    (over,) = cap_violations(day, {"a1": 3}, {"a1": "UTC"})
    assert "decided 4 sends on local day 2026-12-04, cap 3" in over


def test_cap_is_per_adapter() -> None:
    both = sends(1, 2) + sends(3, 4, adapter="a2")
    assert cap_violations(both, {"a1": 2, "a2": 2}, {}) == []
    assert len(cap_violations(both, {"a1": 2, "a2": 1}, {})) == 1


def test_gap_exact_minimum_passes_closer_is_named_unsorted_input() -> None:
    assert gap_violations(sends(10, 0, 5), {"a1": 5}) == []
    (close,) = gap_violations(sends(0, 5, 9.5), {"a1": 5})
    assert "a1-1 and a1-2 decided 4.500 s apart, minimum 5 s" in close


def test_gap_is_per_adapter_and_zero_means_none() -> None:
    mixed = sends(0, 10) + sends(1, 11, adapter="a2")
    assert gap_violations(mixed, {"a1": 5, "a2": 5}) == []
    assert gap_violations(sends(0, 0, 0), {"a1": 0}) == []


def test_gap_bound_counts_pairs_under_two_gaps() -> None:
    assert gap_bound(sends(0, 5, 9, 30), {"a1": 5}) == 2
    assert gap_bound(sends(0, 5), {"a1": 0}) == 0


def test_spacing_min_p1_median_scaled() -> None:
    times = [float(t) for t in (0, 1, 3, 6, 10)]  # intervals 1, 2, 3, 4
    found = spacing(times, scale=10.0)
    assert found is not None
    assert (found.count, found.minimum, found.p1, found.median) == (4, 10.0, 10.0, 25.0)
    many = spacing([float(i * i) for i in range(202)])  # intervals 1, 3, 5, ..., 401
    assert many is not None and many.p1 == 5.0 and many.median == 201.0
    assert spacing([1.0]) is None

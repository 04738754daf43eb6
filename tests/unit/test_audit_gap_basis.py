"""The audit's ``min_gap`` check on decided times (default) and on hand-off times
(``dripdrop audit replay --gap-on handoff``: the ``finished_at`` of the sent results)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from streams.audit.checks import AuditInput, check_gaps, run_checks
from tests.unit.test_audit_checks import T0, adapter, chained, result, sends_of


def _decided_apart_handed_off_together() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    commands = chained(3, gap=timedelta(seconds=90))
    results = [result(n, finished_at=T0 + timedelta(seconds=100 + n)) for n in range(3)]
    return commands, results


def test_sent_sends_carry_the_first_sent_results_finished_at() -> None:
    commands, results = _decided_apart_handed_off_together()
    late = result(1, finished_at=T0 + timedelta(hours=1), provider_message_id="again")
    sends = sends_of(commands, [*results, late])
    assert [s.handed_off_at for s in sends] == [T0 + timedelta(seconds=100 + n) for n in range(3)]


def test_gap_on_decided_times_passes_when_decisions_are_spaced() -> None:
    commands, results = _decided_apart_handed_off_together()
    assert check_gaps(sends_of(commands, results), {"a1": adapter(min_gap_seconds=90)}) == []


def test_gap_on_handoff_times_names_hand_offs_closer_than_the_gap() -> None:
    commands, results = _decided_apart_handed_off_together()
    found = check_gaps(
        sends_of(commands, results), {"a1": adapter(min_gap_seconds=90)}, basis="handoff"
    )
    assert [v.kind for v in found] == ["min_gap", "min_gap"]
    assert [v.step_execution_id for v in found] == ["se1", "se2"]
    assert "hand-offs of se0 and se1 1.000s apart" in found[0].message


def test_gap_on_handoff_orders_by_hand_off_not_by_decision() -> None:
    # Decided 0 s, 90 s, 180 s; handed off in the order 2, 0, 1, each 90 s apart: clean.
    commands = chained(3, gap=timedelta(seconds=90))
    order = {2: 0, 0: 90, 1: 180}
    results = [result(n, finished_at=T0 + timedelta(seconds=order[n])) for n in range(3)]
    sends = sends_of(commands, results)
    assert check_gaps(sends, {"a1": adapter(min_gap_seconds=90)}, basis="handoff") == []


def test_run_checks_uses_the_inputs_gap_basis() -> None:
    commands, results = _decided_apart_handed_off_together()
    adapters = {"a1": adapter(min_gap_seconds=90)}
    decided = run_checks(AuditInput(commands=commands, results=results, adapters=adapters))
    handoff = run_checks(
        AuditInput(commands=commands, results=results, adapters=adapters, gap_basis="handoff")
    )
    assert decided.counts()["min_gap"] == 0
    assert handoff.counts()["min_gap"] == 2

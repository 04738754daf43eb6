"""The chaos harness's short mode (``tests/chaos/harness.py``; ``make chaos`` is the full
one): two workers of one group, 500 enrollments × 3 steps, 6 SIGKILLs (two at named crash
points, one restart on an empty data directory), then the full reconciliation: nothing
twice, nothing lost, no cap or gap violation (mailboxes with a 5 s minimum gap), the
audit clean, and the audit failing on a loss injected afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import Settings
from tests.chaos.harness import run_chaos


@pytest.mark.timeout(900)
def test_chaos_short_two_workers_six_kills_nothing_lost_nothing_twice(
    services: Settings, tmp_path: Path
) -> None:
    report = run_chaos(
        services, enrollments=500, kills=6, seed=7, day_seconds=15.0, work_dir=tmp_path
    )
    print(report.table())
    assert report.kills == 6 and report.empty_restarts == 1
    assert report.duplicate_message_ids == 0, report.table()
    assert report.pin_mismatches == 0, report.table()
    assert not report.violations, report.table()
    assert report.audit_exit == 0, report.table()
    total = report.enrollments * report.steps
    assert report.ledger.get("sent", 0) + len(report.ambiguous) == total, report.table()
    assert report.messages >= report.ledger.get("sent", 0)
    # Caps per adapter-local day and the 5 s gap between decided sends (tests/chaos/pacing.py).
    assert report.cap_violations == 0 and report.gap_violations == 0, report.table()
    # The audit's gap check on hand-off times ran (a figure: hand-offs are not spaced yet).
    assert report.audit_handoff_gap is not None, report.table()
    # Every ambiguous send is listed with the kill that caused it.
    assert len(report.ambiguous_causes) >= report.ambiguous_resolved, report.table()
    assert all("unattributed" not in cause for *_, cause in report.ambiguous_causes)
    # The audit's completeness check names a loss injected after the clean run.
    assert report.injected_loss_exit == 6, report.table()
    assert report.injected_loss_kinds.get("lost_enrollment") == 1, report.table()


FAULTS = [
    pytest.param(("broker",), 150, id="broker"),
    pytest.param(("broker", "postgres", "smtp"), 300, id="all", marks=pytest.mark.long),
]
"""``make test`` runs the broker SIGKILL alone (PostgreSQL and SMTP outages have their own
pipeline tests: test_pipeline_db_outage, test_pipeline_handoff_gap); ``make test-long``
runs the three one after the other (7 minutes on the project's machine)."""


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("faults", "enrollments"), FAULTS)
def test_chaos_faults_broker_kill_postgres_and_smtp_outages_lose_nothing(
    services: Settings, tmp_path: Path, faults: tuple[str, ...], enrollments: int
) -> None:
    """A broker SIGKILL (back after 5 s), PostgreSQL down 30 s, the SMTP server down 60 s,
    one after the other while enrollments × 3 steps flow through two workers."""
    report = run_chaos(
        services,
        enrollments=enrollments,
        kills=0,
        seed=11,
        day_seconds=15.0,
        work_dir=tmp_path,
        faults=faults,
    )
    print(report.table())
    assert report.faults == list(faults)
    assert report.duplicate_message_ids == 0, report.table()
    assert not report.violations, report.table()
    assert report.audit_exit == 0, report.table()
    total = report.enrollments * report.steps
    assert report.ledger == {"sent": total}, report.table()
    assert report.cap_violations == 0 and report.gap_violations == 0, report.table()
    assert report.injected_loss_exit == 6, report.table()

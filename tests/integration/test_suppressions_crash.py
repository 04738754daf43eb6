"""SIGKILL while a suppression list is being applied, restart on the same data directory.

2,000 entries are imported and 100 of them removed again while the worker is stopped; a
worker then applies the backlog and is killed mid-way (a SIGKILL once 200 rows are
written, and at each of the checkpoint's crash points). After a restart on the same data
directory PostgreSQL holds exactly the 1,900 entries left, and the worker's own list (its
``index`` table) agrees: a kept entry refuses an enrollment, a removed one sends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from streams import crashpoints
from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import build_outbound, enrollment_state
from tests.integration.robust_support import (
    crash_matrix,
    restart_if_skipped,
    rows,
    scaled,
    wait_ready,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

ENTRIES = 2_000
REMOVED = 100
KILL_AFTER_ROWS = 200

CRASHES = crash_matrix("sigkill-after-200-rows", 3)


def _stored(settings: Settings, tenant: str) -> set[str]:
    found = rows(
        settings,
        "SELECT recipient_normalized FROM dripdrop.suppressions WHERE tenant_key = %s",
        tenant,
    )
    return {str(r[0]) for r in found}


def _count(settings: Settings, tenant: str) -> int:
    found = rows(
        settings, "SELECT count(*) FROM dripdrop.suppressions WHERE tenant_key = %s", tenant
    )
    return int(found[0][0])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("crash", CRASHES)
def test_sigkill_while_applying_a_suppression_list_loses_nothing(
    crash: str,
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics()
    run = scaled(settings, day_seconds=600.0)
    tenant = f"supp-{uuid.uuid4().hex[:8]}"
    entries = [f"p{i}@{tenant}.example" for i in range(ENTRIES)]
    with DripDrop(run) as dd:
        world = build_outbound(dd, smtp, tenant_key=tenant, steps=1)
        warm = worker_factory(run)
        wait_ready(warm)
        assert warm.stop() == 0, warm.log_tail()
        assert dd.import_suppressions(entries, tenant_key=tenant).accepted == ENTRIES
        for entry in entries[:REMOVED]:
            dd.remove_suppression(entry, tenant_key=tenant)

        if crash.startswith("sigkill"):
            first = worker_factory(run)
            wait_for(
                lambda: _count(run, tenant) >= KILL_AFTER_ROWS or None,
                timeout=120,
                interval=0.0,
                what=f"{KILL_AFTER_ROWS} rows",
            )
            first.kill()
        else:
            first = worker_factory(run, env={crashpoints.ENV: crash})
            wait_for(lambda: not first.alive(), timeout=120, what=f"the crash at {crash}")
            first.kill()
            assert "crash point" in first.log_path.read_text(), first.log_tail()
        assert _stored(run, tenant) != set(entries[REMOVED:]), "killed too late"

        second = worker_factory(run)  # the same app id and data directory
        restarts: list[int] = []

        def applied() -> bool:
            nonlocal second
            second = restart_if_skipped(second, lambda: worker_factory(run), restarts)
            return _stored(run, tenant) == set(entries[REMOVED:])

        wait_for(applied, timeout=120, interval=0.5, what="the list applied")
        # The worker's own list agrees with the rows: a kept entry refuses, a removed sends.
        kept, removed = entries[-1], entries[0]
        probes = {
            address: str(
                dd.enroll(
                    tenant_key=tenant,
                    sequence_id=world.sequence.id,
                    subscriber_id=address,
                    recipient=address,
                    data={"first_name": "P"},
                ).enrollment_id
            )
            for address in (kept, removed)
        }

        def settled() -> bool:
            assert second.alive(), second.log_tail()
            states = [enrollment_state(run, e) for e in probes.values()]
            return all(s is not None and s[0] in ("rejected", "completed") for s in states)

        wait_for(settled, timeout=120, what="the probes settled")
        assert enrollment_state(run, probes[kept]) == ("rejected", "suppressed", None)
        assert enrollment_state(run, probes[removed])[0] == "completed"  # type: ignore[index]
        assert _stored(run, tenant) == set(entries[REMOVED:])
        assert second.stop() == 0, second.log_tail()

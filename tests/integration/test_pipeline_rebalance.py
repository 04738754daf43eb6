"""Two workers in one consumer group, then one of them stops mid-run.

Same app id (consumer group), separate RocksDB datadirs. Four tenants whose partitions
fall on both workers each run 60 enrollments of a 3-step outbound sequence over capped
mailboxes. The partitions are split between the workers (consumer group description); one
worker is stopped while mail is flowing; the other takes over every partition (recovering
their tables from the changelogs) and finishes. Nothing is sent twice, nothing is lost,
no cap is exceeded, per tenant.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from pathlib import Path

from streams.api import DripDrop
from streams.codecs import partition_for
from streams.settings import Settings
from tests.integration.robust_support import (
    assert_exactly_once,
    build_world,
    enroll_many,
    finished,
    group_assignment,
    scaled,
    tenant_messages,
    wait_ready,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

PER_TENANT = 60
STEPS = 3
CAPS = (40, 30, 20)  # 90 a day per tenant: the 120 follow-ups take two simulated days
# First sends on day 1, day 2 free for pins that arrive late on a loaded machine (with no
# delay, follow-ups competed with late pins for headroom: legitimate pool_exhausted), then
# steps 2 and 3 together from day 3, where the caps bind.
DELAYS = (0, 2 * 86_400, 0)


def split(settings: Settings) -> dict[str, set[int]] | None:
    owners = group_assignment(settings)
    if len(owners) == 2 and all(owners.values()):
        return owners
    return None


def tenants_on(owners: dict[str, set[int]], partitions: int, per_owner: int) -> list[str]:
    """Tenant keys whose partitions land ``per_owner`` times on each owner."""
    chosen: dict[str, list[str]] = {member: [] for member in owners}
    for i in itertools.count():
        tenant = f"reb-{uuid.uuid4().hex[:6]}-{i}"
        p = partition_for(tenant, partitions)
        member = next(m for m, parts in owners.items() if p in parts)
        if len(chosen[member]) < per_owner:
            chosen[member].append(tenant)
        if all(len(t) == per_owner for t in chosen.values()):
            return [t for ts in chosen.values() for t in ts]
    raise AssertionError("unreachable")  # pragma: no cover


def test_two_workers_split_partitions_then_one_stops_and_the_other_finishes(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    topics()
    run = scaled(settings, day_seconds=8.0)
    one = worker_factory(run.model_copy(update={"data_dir": str(tmp_path / "data-a")}))
    two = worker_factory(run.model_copy(update={"data_dir": str(tmp_path / "data-b")}))
    wait_ready(one)
    wait_ready(two)
    owners = wait_for(lambda: split(run), timeout=90, what="partitions split between 2 members")
    assert set().union(*owners.values()) == set(range(run.partitions))
    assert not set.intersection(*owners.values())

    with DripDrop(run) as dd:
        worlds = [
            build_world(dd, smtp, tenant=t, caps=CAPS, steps=STEPS, delays=DELAYS)
            for t in tenants_on(owners, run.partitions, per_owner=2)
        ]
        for world in worlds:
            enroll_many(dd, world, PER_TENANT)
    total = PER_TENANT * STEPS * len(worlds)
    wait_for(
        lambda: sum(len(tenant_messages(smtp, w)) for w in worlds) >= total // 4,
        timeout=90,
        interval=0.05,
        what="a quarter of the mail delivered by the two workers",
    )
    assert all(tenant_messages(smtp, w) for w in worlds), "both workers were sending"

    assert two.stop() == 0, two.log_tail()

    def one_member() -> dict[str, set[int]] | None:
        owners = group_assignment(run)
        return owners if len(owners) == 1 else None

    survivor = wait_for(
        one_member,
        timeout=90,
        what="one member left in the group",
    )
    assert set().union(*survivor.values()) == set(range(run.partitions))

    def done() -> bool:
        assert one.alive(), one.log_tail()
        return all(finished(run, w, PER_TENANT) for w in worlds)

    wait_for(done, timeout=150, interval=0.5, what="every enrollment finished by the survivor")
    for world in worlds:
        summary = assert_exactly_once(run, smtp, world)
        assert summary["messages"] == PER_TENANT * STEPS, summary  # nobody was killed
        assert len(summary["days"]) >= 2, summary  # the caps bound
    assert one.stop() == 0, one.log_tail()

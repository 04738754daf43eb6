"""Chaos harness: two workers, SIGKILLs at random moments and at named crash points, then a
reconciliation of every expected (enrollment, step) against PostgreSQL, the log and the
SMTP server. Modelled on Kafka Streams' EOS system test.

* a real broker, PostgreSQL and SMTP server (aiosmtpd, recording every Message-ID);
* **two workers in one consumer group**, each on its own data directory;
* ``--kills`` times, after 1–4 s: one worker is SIGKILLed (or, on every third restart, it
  is restarted with a crash point, ``streams/crashpoints.py``, and kills itself there), and
  restarted on its own data directory — every fifth time on an empty one;
* every mailbox has a non-zero ``min_gap_seconds`` (``GAP_SECONDS``, simulated);
* at the end: nothing sent twice (Message-IDs at the SMTP server and per recipient and
  step), nothing lost (every enrollment completed with one ledger row per step), no cap
  exceeded per adapter-local day and no two decided sends of one adapter closer than its
  gap (``tests/chaos/pacing.py``), day counters equal to the ledger, every send through the
  enrollment's pinned adapter, and ``dripdrop audit replay`` clean; then one enrollment row
  is deleted and the audit must name the loss (its completeness check);
* reported, not failed on: the spacing of hand-offs at the SMTP server per adapter (min,
  p1, median; the sender does not space hand-offs yet, issue 12 item 4), the audit's gap
  check on hand-off times (``--gap-on handoff``), and each ambiguous send with the kill
  (crash point, random SIGKILL or fault) that caused it and their share of all sends.

``make chaos`` runs the full mode (10,000 enrollments × 3 steps, 100 kills);
``tests/integration/test_chaos_short.py`` a short one inside ``make test``. Figures go to
``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from streams import crashpoints
from streams.admin import create_topics, delete_topics_with_prefix
from streams.api import DripDrop
from streams.localrun import WorkerProcess, settings_env
from streams.mailsink import SmtpSink
from streams.settings import Settings
from tests.chaos.pacing import (
    Decided,
    Spacing,
    cap_violations,
    gap_bound,
    gap_violations,
    spacing,
)
from tests.integration.robust_support import (
    World,
    assert_exactly_once,
    build_world,
    enroll_many,
    finished,
    resolve_ambiguous,
    rows,
    scaled,
    tenant_messages,
    wait_ready,
)

DAY = 86_400
ROOT = Path(__file__).resolve().parents[2]
FAULTS = {
    "broker": 5.0,  # SIGKILL the Kafka broker, bring it back after this many seconds
    "postgres": 30.0,  # stop PostgreSQL for this long
    "smtp": 60.0,  # stop the SMTP server for this long
}
"""Faults beyond worker crashes (issue 11): each is injected once, in this order."""
GAP_SECONDS = 5
"""Every mailbox's ``min_gap_seconds`` (simulated): binds in bursts, while a day still
holds its cap (5,001 sends × 5 s < 86,400 s)."""
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Report:
    enrollments: int
    steps: int
    workers: int
    kills: int = 0
    crash_points: Counter[str] = field(default_factory=Counter)
    empty_restarts: int = 0
    messages: int = 0
    duplicate_message_ids: int = 0
    ledger: dict[str, int] = field(default_factory=dict)
    ambiguous: list[tuple[str, int]] = field(default_factory=list)
    ambiguous_resolved: int = 0
    ambiguous_causes: list[tuple[str, int, str]] = field(default_factory=list)
    """Every send that was ever ambiguous: (execution id, step position, the kill or fault
    that left it so, e.g. ``kill 12 checkpoint.before_store``)."""
    cap_violations: int = 0
    gap_violations: int = 0
    gap_bound: int = 0
    handoff_spacing: dict[str, Spacing] = field(default_factory=dict)
    audit_handoff_gap: int | None = None
    """``min_gap`` violations the audit finds on hand-off times (informational)."""
    injected_loss_exit: int | None = None
    injected_loss_kinds: dict[str, int] = field(default_factory=dict)
    pin_mismatches: int = 0
    violations: list[str] = field(default_factory=list)
    audit_exit: int | None = None
    faults: list[str] = field(default_factory=list)
    worker_exits: int = 0  # workers that left by themselves (outside crash points)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and self.audit_exit == 0

    def as_json(self) -> dict[str, Any]:
        """The fields as JSON-ready values (``asdict`` would rebuild the ``Counter`` from
        its items, counting the pairs as keys)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["crash_points"] = dict(self.crash_points)
        out["handoff_spacing"] = {k: asdict(v) for k, v in self.handoff_spacing.items()}
        return out

    def table(self) -> str:
        total = self.enrollments * self.steps
        ambiguous = len(self.ambiguous)
        ever = len(self.ambiguous_causes)
        lines = [
            "| figure | value |",
            "|---|---|",
            f"| enrollments × steps | {self.enrollments} × {self.steps} = {total} |",
            f"| workers | {self.workers} |",
            f"| SIGKILLs (of which at crash points) | {self.kills} "
            f"({sum(self.crash_points.values())}) |",
            f"| restarts on an empty data directory | {self.empty_restarts} |",
            f"| messages at the SMTP server | {self.messages} |",
            f"| duplicate Message-IDs | {self.duplicate_message_ids} |",
            f"| ledger | {json.dumps(self.ledger, sort_keys=True)} |",
            f"| ambiguous, resolved by the operator's rule | {self.ambiguous_resolved} "
            f"({100 * self.ambiguous_resolved / max(total, 1):.2f} %) |",
            f"| ambiguous left at the end | {ambiguous} |",
            f"| ever ambiguous (share of all sends; target ≤ 0.1 %) | {ever} "
            f"({100 * ever / max(total, 1):.3f} %) |",
            f"| cap violations (per adapter-local day, decided sends) | {self.cap_violations} |",
            f"| gap violations (decided sends, min gap {GAP_SECONDS} s) | {self.gap_violations} |",
            f"| decided pairs closer than two gaps (the gap bound) | {self.gap_bound} |",
            f"| sends not through the pinned adapter | {self.pin_mismatches} |",
            f"| audit replay exit | {self.audit_exit} |",
            f"| audit min_gap on hand-off times (informational) | {self.audit_handoff_gap} |",
            f"| audit exit after an injected loss (must be 6) | {self.injected_loss_exit} "
            f"{json.dumps(self.injected_loss_kinds, sort_keys=True)} |",
            f"| violations | {len(self.violations)} |",
            f"| faults injected | {', '.join(self.faults) or 'none'} |",
            f"| workers that exited by themselves and were restarted | {self.worker_exits} |",
            f"| wall time | {self.seconds:.0f} s |",
        ]
        for point, n in sorted(self.crash_points.items()):
            lines.append(f"| crash point {point} | {n} |")
        for adapter, spaced in sorted(self.handoff_spacing.items()):
            lines.append(
                f"| hand-off spacing at the SMTP server, {adapter} ({spaced.count + 1} sends,"
                f" simulated) | {spaced.text()} |"
            )
        lines.extend(
            f"| ambiguous | {exec_id} step {position}: {cause} |"
            for exec_id, position, cause in self.ambiguous_causes
        )
        lines.extend(f"| violation | {v[:300]} |" for v in self.violations)
        return "\n".join(lines)


class Workers:
    """Two (or more) worker processes of one group, each on its own data directory."""

    def __init__(self, settings: Settings, count: int, base: Path, rng: random.Random) -> None:
        self.settings = settings
        self.base = base
        self.rng = rng
        self.dirs = [base / f"w{i}" for i in range(count)]
        self.procs: list[WorkerProcess] = []
        self.armed: list[str | None] = [None] * count
        self.starts = 0
        for i in range(count):
            self.procs.append(self._start(i, None))

    def _start(self, i: int, crash: str | None) -> WorkerProcess:
        self.starts += 1
        self.armed[i] = crash
        run = self.settings.model_copy(update={"data_dir": str(self.dirs[i])})
        env = {crashpoints.ENV: crash} if crash else None
        return WorkerProcess(run, self.base / f"w{i}-{self.starts}.log", env=env)

    def restart(self, i: int, *, empty: bool, crash: str | None) -> None:
        if empty:
            self.dirs[i] = self.base / f"w{i}-empty-{self.starts}"
        self.procs[i] = self._start(i, crash)

    def stop(self) -> list[int]:
        return [p.stop() for p in self.procs]


class Handoffs:
    """Wraps the SMTP sink's ``DATA`` hook to note when each message was taken (wall
    clock), per envelope sender: the hand-off spacing at the server."""

    def __init__(self, smtp: SmtpSink) -> None:
        self.times: dict[str, list[float]] = {}
        self.message_ids: set[str] = set()
        inner = smtp.handler.handle_DATA

        async def timed(server: Any, session: Any, envelope: Any) -> str:
            response: str = await inner(server, session, envelope)
            if response.startswith("250"):
                self.times.setdefault(envelope.mail_from, []).append(time.time())
                found = MESSAGE_ID.search(envelope.original_content or envelope.content or b"")
                if found:
                    self.message_ids.add(found.group(1).decode(errors="replace"))
            return response

        smtp.handler.handle_DATA = timed  # type: ignore[method-assign]


class Causes:
    """Which kill (or fault) left each send ambiguous: after every kill, the rows in
    ``sending`` get that kill as their cause, unless an earlier one is still theirs. A send
    is ``sending`` only during its own hand-off, so a row still there after a kill was cut
    by it; a row that leaves ``sending`` without becoming ambiguous loses its cause."""

    def __init__(self, run: Settings, tenant: str) -> None:
        self.run = run
        self.tenant = tenant
        self.cause: dict[str, str] = {}

    def snapshot(self, cause: str) -> None:
        current = dict(
            rows(
                self.run,
                "SELECT id::text, status FROM dripdrop.step_executions WHERE tenant_key = %s"
                " AND (status IN ('sending', 'ambiguous') OR resolution IS NOT NULL)",
                self.tenant,
            )
        )
        self.cause = {k: v for k, v in self.cause.items() if k in current}
        for exec_id, status in current.items():
            if exec_id not in self.cause:
                self.cause[exec_id] = cause if status == "sending" else f"{cause} (seen ambiguous)"


def run_chaos(
    settings: Settings,
    *,
    enrollments: int,
    kills: int,
    workers: int = 2,
    seed: int = 1,
    day_seconds: float = 8.0,
    tick_seconds: float = 0.2,
    finish_timeout: float = 600.0,
    work_dir: Path | None = None,
    faults: tuple[str, ...] = (),
    progress: bool = True,
) -> Report:
    """Run one chaos scenario on ``settings``' services; returns the report (never raises
    on a violation: the caller decides).

    ``tick_seconds``: the workers' tick. With a minimum gap, the steps a tick finds due on
    one adapter share its ``now``, so a backlog drains at one send per adapter per tick
    (the others are deferred to later gap slots): on the scaled clock a shorter tick is
    what keeps the full run's 20,000 follow-ups from taking half an hour.
    """
    rng = random.Random(seed)
    base = work_dir or Path(tempfile.mkdtemp(prefix="dripdrop-chaos-"))
    run_id = uuid.uuid4().hex[:8]
    run = scaled(
        settings.model_copy(
            update={"topic_prefix": f"chaos{run_id}.", "app_id": f"dripdrop-chaos{run_id}"}
        ),
        day_seconds=day_seconds,
        tick_interval_seconds=tick_seconds,
    )
    steps = 3
    caps = _caps(enrollments)
    report = Report(enrollments=enrollments, steps=steps, workers=workers)
    started = time.monotonic()
    create_topics(run)
    try:
        with SmtpSink() as smtp, DripDrop(run) as dd:
            handoffs = Handoffs(smtp)
            world = build_world(
                dd, smtp, tenant=f"chaos-{run_id}", caps=caps, steps=steps, delays=(0, 2 * DAY, DAY)
            )
            world.adapters = [
                dd.update_channel_adapter(
                    a.id, tenant_key=world.tenant, min_gap_seconds=GAP_SECONDS
                )
                for a in world.adapters
            ]
            causes = Causes(run, world.tenant)
            pool = Workers(run, workers, base, rng)
            for proc in pool.procs:
                wait_ready(proc, timeout=90)
            enroll_many(dd, world, enrollments)
            _chaos(pool, report, kills, rng, progress, causes)
            for fault in faults:
                _fault(fault, smtp, pool, report, progress, causes)
            for proc in pool.procs:
                wait_ready(proc, timeout=120)
            deadline = time.monotonic() + finish_timeout
            while time.monotonic() < deadline and not finished(run, world, enrollments):
                causes.snapshot("after the kills and faults")
                # Ambiguous sends hold their enrollments until settled (docs/operations.md).
                report.ambiguous_resolved += resolve_ambiguous(dd, smtp, world)
                for i, proc in enumerate(pool.procs):
                    if not proc.alive():
                        causes.snapshot(f"worker {i} exited by itself")
                        _restart_exited(pool, i, report)
                time.sleep(1.0)
            time.sleep(2.0)  # the last results and rows
            codes = pool.stop()
            if any(code not in (0, None) for code in codes):
                report.violations.append(f"graceful stop exit codes {codes}")
            _reconcile(run, smtp, world, report)
            _pacing(run, world, handoffs, report, causes)
            report.audit_exit, _ = _audit(run, world)
            _, handoff = _audit(run, world, "--gap-on", "handoff")
            report.audit_handoff_gap = handoff.get("counts", {}).get("min_gap")
            _inject_loss(run, world, report)
    finally:
        delete_topics_with_prefix(run)
    report.seconds = time.monotonic() - started
    return report


def _caps(enrollments: int) -> tuple[int, int, int]:
    """Caps that bind but fit every pin in a day (weights = caps, 5:3:2)."""
    total = max(enrollments, 10)
    return (total // 2 + 1, total * 3 // 10 + 1, total // 5 + 1)


def _restart_exited(pool: Workers, i: int, report: Report) -> None:
    """A worker that left by itself is restarted, as a supervisor would. Outside a crash
    point that is a violation unless a fault was injected (a worker may stop on a broker
    it cannot reach; nothing may be lost either way) or the worker stopped on skipped
    input (``EXIT_SKIPPED_INPUT``)."""
    proc = pool.procs[i]
    proc.kill()  # reap it and close its log
    log_text = proc.log_path.read_text(errors="replace")
    if "crash point" not in log_text:
        report.worker_exits += 1
        # Stopping uncommitted on input the consumer skipped is the worker protecting
        # itself (streams/pipeline.py, EXIT_SKIPPED_INPUT): restarted, nothing is lost.
        protected = "input records skipped by the consumer" in log_text
        if not report.faults and not protected:
            report.violations.append(f"worker {i} exited: {proc.log_tail(5)}")
    pool.restart(i, empty=False, crash=None)


def _services(command: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "infra" / "services.py"), command], check=True, timeout=300
    )


def _fault(
    name: str, smtp: SmtpSink, pool: Workers, report: Report, progress: bool, causes: Causes
) -> None:
    """Inject one fault while sends flow, hold it, then restore the service."""
    hold = FAULTS[name]
    if progress:
        print(f"fault: {name} for {hold:.0f} s", file=sys.stderr, flush=True)
    report.faults.append(name)
    if name == "smtp":
        smtp.stop()
    elif name == "postgres":
        _services("stop-postgres")
    elif name == "broker":
        _services("kill-kafka")
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        time.sleep(1.0)
    if name == "smtp":
        smtp.restart()
    else:
        _services("up")
    causes.snapshot(f"fault {name}")
    for i, proc in enumerate(pool.procs):
        if not proc.alive():
            _restart_exited(pool, i, report)


def _chaos(
    pool: Workers,
    report: Report,
    kills: int,
    rng: random.Random,
    progress: bool,
    causes: Causes,
) -> None:
    while report.kills < kills:
        _wait_watching(pool, rng.uniform(1.0, 4.0), causes, report.kills + 1)
        i = rng.randrange(len(pool.procs))
        proc = pool.procs[i]
        if proc.alive():
            proc.kill()
            causes.snapshot(f"kill {report.kills + 1} (SIGKILL of worker {i})")
        else:  # it killed itself at its crash point
            proc.kill()  # reap it and close its log
            causes.snapshot(f"kill {report.kills + 1} (worker {i} at {pool.armed[i]})")
        report.kills += 1
        empty = report.kills % 5 == 0
        report.empty_restarts += empty
        crash = None
        if report.kills % 3 == 0:
            point = rng.choice(crashpoints.POINTS)
            crash = f"{point}:{rng.randint(1, 4)}"
            report.crash_points[point] += 1
        pool.restart(i, empty=empty, crash=crash)
        if progress:
            print(
                f"kill {report.kills}/{kills}: worker {i}"
                f"{' (empty dir)' if empty else ''}{f' armed {crash}' if crash else ''}",
                file=sys.stderr,
                flush=True,
            )


def _wait_watching(pool: Workers, seconds: float, causes: Causes, kill: int) -> None:
    """Sleep, but note at once a worker that killed itself at its armed crash point: its
    rows in ``sending`` are that crash point's (the other worker may take them over and
    declare them ambiguous before the next kill)."""
    deadline = time.monotonic() + seconds
    noted: set[int] = set()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        for i, proc in enumerate(pool.procs):
            if pool.armed[i] and i not in noted and not proc.alive():
                noted.add(i)
                causes.snapshot(f"kill {kill} (worker {i} at {pool.armed[i]})")


def _pacing(
    run: Settings, world: World, handoffs: Handoffs, report: Report, causes: Causes
) -> None:
    """Caps per adapter-local day and gaps between decided sends (violations), the
    hand-off spacing at the SMTP server (a statistic), and the ambiguous sends' causes."""
    decided = [
        Decided(str(exec_id), str(adapter_id), datetime.fromisoformat(str(at)))
        for exec_id, adapter_id, at in rows(
            run,
            "SELECT id::text, adapter_id::text, payload->>'decided_at'"
            " FROM dripdrop.step_executions WHERE tenant_key = %s"
            " AND status IN ('sent', 'ambiguous') AND payload ? 'decided_at'",
            world.tenant,
        )
    ]
    gaps = {a.id: a.min_gap_seconds for a in world.adapters}
    over = cap_violations(decided, world.caps, {a.id: a.timezone for a in world.adapters})
    close = gap_violations(decided, gaps)
    report.cap_violations, report.gap_violations = len(over), len(close)
    report.gap_bound = gap_bound(decided, gaps)
    report.violations.extend(over[:20] + close[:20])
    if not decided:
        report.violations.append("no decided send in the ledger to check caps and gaps on")
    names = {a.from_address: a.name for a in world.adapters}
    for sender, times in handoffs.times.items():
        spaced = spacing(times, scale=run.clock_scale)
        if sender in names and spaced is not None:
            report.handoff_spacing[names[sender]] = spaced
    causes.snapshot("after the run")
    for exec_id, position in rows(
        run,
        "SELECT x.id::text, s.position FROM dripdrop.step_executions x"
        " JOIN dripdrop.steps s ON s.id = x.step_id WHERE x.tenant_key = %s"
        " AND (x.status = 'ambiguous' OR x.resolution IS NOT NULL) ORDER BY x.updated_at",
        world.tenant,
    ):
        mid = rows(
            run, "SELECT out_message_id FROM dripdrop.step_executions WHERE id = %s", exec_id
        )[0][0]
        seen = {m.strip("<>") for m in handoffs.message_ids}  # stored bare (SPEC §8)
        where = "received by the SMTP server" if mid in seen else "not received"
        cause = causes.cause.get(exec_id, "unattributed")
        report.ambiguous_causes.append((exec_id, int(position), f"{cause}; {where}"))


def _inject_loss(run: Settings, world: World, report: Report) -> None:
    """Delete one completed enrollment's row (its ledger rows go with it): the audit's
    completeness check must now fail, naming the loss."""
    victim = rows(
        run,
        "SELECT id::text FROM dripdrop.enrollments WHERE tenant_key = %s ORDER BY id LIMIT 1",
        world.tenant,
    )
    if not victim:
        report.violations.append("no enrollment row to inject a loss into")
        return
    with psycopg.connect(run.database_url) as conn:
        conn.execute("DELETE FROM dripdrop.enrollments WHERE id = %s", (victim[0][0],))
    report.injected_loss_exit, found = _audit(run, world)
    report.injected_loss_kinds = {k: n for k, n in found.get("counts", {}).items() if n}
    if report.injected_loss_exit != 6 or not report.injected_loss_kinds.get("lost_enrollment"):
        report.violations.append(
            f"the audit missed an injected loss (enrollment {victim[0][0]} deleted): exit"
            f" {report.injected_loss_exit}, {report.injected_loss_kinds}"
        )


def _reconcile(run: Settings, smtp: SmtpSink, world: World, report: Report) -> None:
    messages = tenant_messages(smtp, world)
    report.messages = len(messages)
    ids = Counter(m.header("Message-ID") for m in messages)
    report.duplicate_message_ids = sum(n - 1 for n in ids.values() if n > 1)
    ledger = rows(
        run,
        "SELECT x.status, count(*) FROM dripdrop.step_executions x WHERE x.tenant_key = %s"
        " GROUP BY 1",
        world.tenant,
    )
    report.ledger = {status: int(n) for status, n in ledger}
    report.ambiguous = [
        (str(r[0]), int(r[1]))
        for r in rows(
            run,
            "SELECT x.id::text, s.position FROM dripdrop.step_executions x"
            " JOIN dripdrop.steps s ON s.id = x.step_id"
            " WHERE x.tenant_key = %s AND x.status = 'ambiguous'",
            world.tenant,
        )
    ]
    report.pin_mismatches = int(
        rows(
            run,
            "SELECT count(*) FROM dripdrop.step_executions x"
            " JOIN dripdrop.enrollments e ON e.id = x.enrollment_id"
            " WHERE x.tenant_key = %s AND x.adapter_id IS DISTINCT FROM e.adapter_id",
            world.tenant,
        )[0][0]
    )
    if report.pin_mismatches:
        report.violations.append(f"{report.pin_mismatches} sends not through the pinned adapter")
    try:
        assert_exactly_once(run, smtp, world)
    except AssertionError as exc:
        report.violations.append(str(exc))


def _audit(run: Settings, world: World, *extra: str) -> tuple[int, dict[str, Any]]:
    """``dripdrop audit replay --json`` over the tenant: (exit code, the JSON report)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli.main",
            "audit",
            "replay",
            "--tenant",
            world.tenant,
            "--json",
            *extra,
        ],
        env=settings_env(run),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        found: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        found = {}
    if done.returncode != 0 and not extra:
        print(done.stdout[-3000:], done.stderr[-2000:], file=sys.stderr)
    return done.returncode, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrollments", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--day-seconds", type=float, default=120.0)
    parser.add_argument("--tick-seconds", type=float, default=0.2, help="the workers' tick")
    parser.add_argument(
        "--faults",
        default="broker,postgres,smtp",
        help="faults after the kills, comma-separated (broker, postgres, smtp; '' for none)",
    )
    parser.add_argument(
        "--finish-timeout",
        type=float,
        default=1800.0,
        help="seconds to wait after the kills and faults for every enrollment to finish",
    )
    parser.add_argument("--json", action="store_true", help="the report as JSON (table on stderr)")
    args = parser.parse_args(argv)
    report = run_chaos(
        Settings(),
        enrollments=args.enrollments,
        kills=args.kills,
        workers=args.workers,
        seed=args.seed,
        day_seconds=args.day_seconds,
        tick_seconds=args.tick_seconds,
        finish_timeout=args.finish_timeout,
        faults=tuple(f for f in args.faults.split(",") if f),
    )
    if args.json:
        print(report.table(), file=sys.stderr)
        print(json.dumps(report.as_json(), default=str, indent=2))
    else:
        print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

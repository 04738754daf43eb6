"""``make demo``: 14 simulated days of cold outbound through the real pipeline, in ~90 s.

One tenant, three mailboxes (weights 2:1:1) on the seed's ramp (floor 5, +3/day, cap 40,
90 s minimum gap), 300 prospects enrolled over the first days, a 4-step sequence whose
third step goes out through an override sender, one mailbox that starts bouncing on day 4
(resting → probing by timer → ramping), and 10 % of prospects replying. Mail is delivered
to a local SMTP server. At the end: a per-mailbox, per-day table of sends vs effective cap,
the health transitions, and a PNG chart of the same (``demo-output/``).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from streams.admin import create_topics, delete_topics_with_prefix
from streams.api import DripDrop
from streams.clock import clock_from
from streams.codecs import Codecs
from streams.localrun import WorkerProcess
from streams.mailsink import SmtpSink
from streams.settings import Settings

DAY = timedelta(days=1)
SIM_START = datetime(2026, 12, 7, tzinfo=UTC)
MAILBOXES = (("mbox-a", 2), ("mbox-b", 1), ("mbox-c", 1))
BOUNCING = "mbox-b"
console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-day", type=float, default=5.0)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--prospects", type=int, default=300)
    parser.add_argument("--out", default="demo-output")
    args = parser.parse_args()
    run = f"demo{uuid.uuid4().hex[:8]}"
    settings = Settings().model_copy(
        update={
            "topic_prefix": f"{run}.",
            "app_id": f"dripdrop-{run}",
            "data_dir": str(Path(".dripdrop") / "demo" / run),
            "clock_scale": 86400 / args.seconds_per_day,
            "clock_epoch": SIM_START.timestamp(),
            "clock_origin": time.time() + 8.0,
            "tick_interval_seconds": 0.25,
        }
    )
    create_topics(settings)
    console.print(
        f"[bold]DripDrop demo[/] run [cyan]{run}[/]: {args.days} simulated days, "
        f"{args.seconds_per_day:g} s per day"
    )
    try:
        with SmtpSink() as smtp, DripDrop(settings) as dd:
            world = author(dd, smtp, tenant=f"acct-{run}")
            Path(settings.data_dir).parent.mkdir(parents=True, exist_ok=True)
            worker = WorkerProcess(settings, Path(settings.data_dir).with_suffix(".log"))
            try:
                Host(dd, settings, world, args.prospects).run(args.days)
            finally:
                worker.stop()
            report(settings, world, smtp, Path(args.out) / f"{run}.png", args.days)
    finally:
        delete_topics_with_prefix(settings)


def author(dd: DripDrop, smtp: SmtpSink, *, tenant: str) -> dict[str, Any]:
    """The seed's set-up: a pause pool of mailboxes on the 14-day ramp, an outbound version."""
    adapters = {}
    for name, _ in MAILBOXES:
        adapters[name] = dd.create_channel_adapter(
            tenant_key=tenant,
            name=name,
            provider="smtp",
            from_address=f"{name}@sales.example",
            health_state="ramping",
            daily_cap=40,
            ramp_floor=5,
            ramp_increment=3,
            ramp_started_at=SIM_START,
            min_gap_seconds=90,
            config=smtp.adapter_config(),
        )
    override = dd.create_channel_adapter(
        tenant_key=tenant,
        name="newsletter",
        provider="smtp",
        from_address="news@esp.example",
        health_state="active",
        config=smtp.adapter_config(),
    )
    pool = dd.create_adapter_pool(tenant_key=tenant, name="sales_pool", on_pin_unavailable="pause")
    for name, weight in MAILBOXES:
        dd.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapters[name].id, weight=weight)
    sequence = dd.create_sequence(tenant_key=tenant, key="cold-intro")
    version = dd.create_sequence_version(
        sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    plan = [(0, None), (2, None), (2, override.id), (3, None)]
    for position, (delay_days, override_id) in enumerate(plan):
        dd.create_step(
            version.id,
            tenant_key=tenant,
            key=f"step{position + 1}",
            position=position,
            delay_seconds=int(delay_days * DAY.total_seconds()),
            subject_template="Quick question, {{ first_name }}"
            if position == 0
            else "Re: Quick question, {{ first_name }}",
            body_template=f"Hi {{{{ first_name }}}}, note {position + 1}.",
            adapter_override_id=override_id,
        )
    return {
        "tenant": tenant,
        "adapters": adapters,
        "override": override,
        "pool": pool,
        "sequence": sequence,
    }


class Host:
    """Plays the host application: enrolls prospects, replies, reports bounces."""

    def __init__(
        self, dd: DripDrop, settings: Settings, world: dict[str, Any], prospects: int
    ) -> None:
        self.dd, self.settings, self.world = dd, settings, world
        self.clock = clock_from(settings)
        self.prospects = prospects
        self.enrolled: dict[int, str] = {}
        self.replied: set[str] = set()
        self.bounced = False
        self.signals = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"}
        )
        self.codec = Codecs(settings).for_topic("health-signals")

    def run(self, days: int) -> None:
        end = SIM_START + days * DAY
        enroll_days = 10
        last_day = -1
        while (now := self.clock.now()) < end:
            elapsed = (now - SIM_START) / DAY
            due = min(self.prospects, int(max(0.0, elapsed) / enroll_days * self.prospects) + 1)
            for i in range(len(self.enrolled), due):
                self.enrolled[i] = (
                    self.dd.enroll(  # an enroll's Accepted names its enrollment
                        tenant_key=self.world["tenant"],
                        sequence_id=self.world["sequence"].id,
                        subscriber_id=f"prospect-{i}",
                        recipient=f"prospect{i}@buyer.example",
                        data={"first_name": f"P{i}"},
                    ).enrollment_id
                    or ""
                )
            self.reply_to_some()
            if elapsed >= 3.5 and not self.bounced:
                self.bounce_mailbox()
            if int(elapsed) != last_day and elapsed >= 0:
                last_day = int(elapsed)
                console.print(
                    f"  simulated day {last_day + 1:>2}: {len(self.enrolled)} enrolled,"
                    f" {len(self.replied)} replied"
                )
            time.sleep(0.1)

    def reply_to_some(self) -> None:
        """Every tenth prospect replies to its first message (In-Reply-To = its Message-ID)."""
        wanted = [e for i, e in self.enrolled.items() if i % 10 == 0 and e not in self.replied]
        if not wanted:
            return
        with psycopg.connect(self.settings.database_url) as conn:
            sent = conn.execute(
                "SELECT x.enrollment_id::text, x.out_message_id, x.adapter_id::text"
                " FROM dripdrop.step_executions x WHERE x.enrollment_id = ANY(%s::uuid[])"
                " AND x.status = 'sent'",
                (wanted,),
            ).fetchall()
        for enrollment_id, message_id, adapter_id in sent:
            if enrollment_id in self.replied:
                continue
            self.dd.ingest_inbound_message(
                adapter_id,
                {
                    "message_id": f"<reply-{uuid.uuid4()}@buyer.example>",
                    "in_reply_to": message_id,
                    "from": "prospect@buyer.example",
                    "to": "sales@sales.example",
                    "subject": "Re: Quick question",
                    "body_text": "Sounds interesting, let's talk.",
                    "intent": "reply",
                },
                tenant_key=self.world["tenant"],
            )
            self.replied.add(enrollment_id)

    def bounce_mailbox(self) -> None:
        """Hard bounces for the bouncing mailbox's latest sends: over 2 % of a 20+ sample."""
        adapter = self.world["adapters"][BOUNCING]
        with psycopg.connect(self.settings.database_url) as conn:
            sent = conn.execute(
                "SELECT out_message_id, recipient FROM dripdrop.step_executions WHERE"
                " adapter_id = %s AND status = 'sent' ORDER BY sent_at DESC LIMIT 2",
                (adapter.id,),
            ).fetchall()
        if len(sent) < 2:
            return
        for message_id, recipient in sent:
            value = self.codec.encode(
                {
                    "event_id": str(uuid.uuid4()),
                    "tenant_key": self.world["tenant"],
                    "occurred_at": self.clock.now(),
                    "kind": "bounce",
                    "adapter_id": adapter.id,
                    "message_id": message_id,
                    "recipient": recipient,
                    "bounce_type": "hard",
                    "source": "demo-esp-webhook",
                }
            )
            self.signals.produce(
                self.settings.topic("health-signals"),
                key=self.world["tenant"].encode(),
                value=value,
            )
        self.signals.flush(10)
        self.bounced = True
        console.print(f"  [red]{BOUNCING} bounced twice[/] (hard bounces reported by the host)")


def report(settings: Settings, world: dict[str, Any], smtp: SmtpSink, png: Path, days: int) -> None:
    names = {a.id: name for name, a in world["adapters"].items()}
    names[world["override"].id] = "newsletter"
    with psycopg.connect(settings.database_url) as conn:
        counters = conn.execute(
            "SELECT adapter_id::text, local_day, sent, cap FROM dripdrop.adapter_day_counters"
            " WHERE tenant_key = %s ORDER BY local_day",
            (world["tenant"],),
        ).fetchall()
        transitions = conn.execute(
            "SELECT adapter_id::text, at, from_state, to_state, reason"
            " FROM dripdrop.adapter_health_transitions WHERE tenant_key = %s ORDER BY at",
            (world["tenant"],),
        ).fetchall()
        states = conn.execute(
            "SELECT state, count(*) FROM dripdrop.enrollments WHERE tenant_key = %s"
            " GROUP BY state ORDER BY state",
            (world["tenant"],),
        ).fetchall()
    grid: dict[str, dict[int, tuple[int, int | None]]] = defaultdict(dict)
    for adapter_id, day, sent, cap in counters:
        grid[names[adapter_id]][(day - SIM_START.date()).days + 1] = (sent, cap)
    table = Table(title="Sends vs effective cap per mailbox and local day (sent/cap)")
    table.add_column("day", justify="right")
    columns = [n for n, _ in MAILBOXES] + ["newsletter"]
    for name in columns:
        table.add_column(name, justify="right")
    over = 0
    for day in range(1, days + 1):
        cells = []
        for name in columns:
            sent, cap = grid[name].get(day, (0, None))
            over += int(cap is not None and sent > cap)
            cells.append(f"{sent}/{cap if cap is not None else '-'}")
        table.add_row(str(day), *cells)
    console.print(table)
    health = Table(title="Health transitions")
    for col in ("simulated time", "mailbox", "from", "to", "reason"):
        health.add_column(col)
    for adapter_id, at, from_state, to_state, reason in transitions:
        health.add_row(
            at.strftime("%Y-%m-%d %H:%M"),
            names.get(adapter_id, adapter_id),
            str(from_state),
            str(to_state),
            reason,
        )
    console.print(health)
    console.print("Enrollments: " + ", ".join(f"{s}={n}" for s, n in states))
    console.print(f"SMTP server received {len(smtp.messages)} messages; days over cap: {over}")
    chart(grid, transitions, names, png, days)
    console.print(f"Chart: {png}")


def chart(
    grid: dict[str, dict[int, tuple[int, int | None]]],
    transitions: list[Any],
    names: dict[str, str],
    png: Path,
    days: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(MAILBOXES), 1, figsize=(10, 8), sharex=True)
    for ax, (name, _) in zip(axes, MAILBOXES, strict=True):
        xs = list(range(1, days + 1))
        sent = [grid[name].get(d, (0, None))[0] for d in xs]
        caps = [grid[name].get(d, (0, None))[1] for d in xs]
        ax.bar(xs, sent, color="#4c72b0", label="sent")
        ax.step(
            xs,
            [c if c is not None else float("nan") for c in caps],
            where="mid",
            color="#dd8452",
            label="effective cap",
        )
        mine = [t for t in transitions if names.get(t[0]) == name]
        for n, (_adapter_id, at, _from, to_state, _reason) in enumerate(mine):
            x = (at - datetime.combine(SIM_START.date(), datetime.min.time(), UTC)) / DAY + 1
            ax.axvline(x - 0.5, color="#c44e52", linestyle=":")
            ax.text(
                x - 0.45,
                ax.get_ylim()[1] * (0.9 - 0.12 * n),
                str(to_state),
                color="#c44e52",
                fontsize=8,
            )
        ax.set_ylabel(name)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("simulated day")
    fig.suptitle("DripDrop demo: sends vs effective cap per mailbox")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main()

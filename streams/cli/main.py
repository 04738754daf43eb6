"""The ``dripdrop`` command line: the authoring API and operator commands (SPEC §4, §10).

Settings come from the environment (``DRIPDROP_DATABASE_URL``, ``DRIPDROP_KAFKA_BOOTSTRAP``,
``DRIPDROP_TOPIC_PREFIX``…). Exit codes: 0 ok, 2 usage, 3 not found, 4 tenant mismatch,
5 conflict or invalid input, 1 unexpected (database or broker unreachable).
"""

from __future__ import annotations

import typer

from streams.cli import adapter, audit, enrollment, ingest, ops, pool, sends, sequence
from streams.cli import pump as pump_cli
from streams.cli import suppressions as suppressions_cli
from streams.cli import throttle as throttle_cli
from streams.cli import web as web_cli
from streams.cli import webhooks as webhooks_cli

app = typer.Typer(
    name="dripdrop",
    help="DripDrop for Kafka: author adapters, pools and sequences; enroll; operate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(adapter.app, name="adapter")
app.add_typer(pool.app, name="pool")
app.add_typer(sequence.sequence_app, name="sequence")
app.add_typer(sequence.version_app, name="version")
app.add_typer(sequence.step_app, name="step")
app.command("enroll")(enrollment.enroll)
app.add_typer(enrollment.app, name="enrollment")
app.command("ingest")(ingest.ingest)
app.add_typer(ops.outbox_app, name="outbox")
app.add_typer(ops.db_app, name="db")
app.add_typer(ops.topics_app, name="topics")
app.add_typer(audit.app, name="audit")
app.add_typer(sends.app, name="sends")
app.add_typer(suppressions_cli.app, name="suppressions")
app.add_typer(throttle_cli.app, name="throttle")
app.command("web")(web_cli.web)
app.add_typer(webhooks_cli.app, name="webhooks")
app.command("pump")(pump_cli.pump)

if __name__ == "__main__":
    app()

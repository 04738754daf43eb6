"""Reply-to-stop through the IMAP pump: delivery into the mailbox → enrollment stopped.

Run: ``.venv/bin/python -m benchmarks.pump_bench [--replies 100]`` (``make bench`` runs it).

One real worker, one ``dripdrop pump`` (IMAP IDLE against the project's Dovecot), one
mailbox adapter. N enrollments get their first step sent (``memory`` provider, so the
SMTP server is not part of the figure); then, one at a time, a reply to each send is
delivered into the sender's Dovecot mailbox over LMTP (as Postfix delivers). The clock
starts when LMTP accepted the message (it is in the mailbox) and stops when the
enrollment row is ``replied`` in PostgreSQL: Dovecot's IDLE push → the pump's FETCH →
classification → produce, Kafka ack, cursor save → the worker's correlation and commit →
the sink's row. The market polls every 5-15 minutes; the target is p99 ≤ 2 s.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from streams.admin import create_topics, delete_topics_with_prefix
from streams.api import DripDrop
from streams.localrun import WorkerProcess
from streams.pump.localrun import PumpProcess
from streams.settings import Settings
from tests.integration.mail_fixtures import MailServer
from tests.integration.pump_support import inbound_config, reply


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def run(replies: int, workdir: Path) -> dict[str, Any]:
    settings = Settings().model_copy(
        update={
            "topic_prefix": f"bench-pump-{uuid.uuid4().hex[:8]}.",
            "app_id": f"bench-pump-{uuid.uuid4().hex[:8]}",
            "data_dir": str(workdir / "worker-data"),
        }
    )
    mail = MailServer()
    create_topics(settings)
    worker = WorkerProcess(settings, workdir / "worker.log")
    pump: PumpProcess | None = None
    try:
        with DripDrop(settings) as dd:
            tenant = f"bench-{uuid.uuid4().hex[:6]}"
            address = f"bench-{uuid.uuid4().hex[:8]}@dripdrop.test"
            password_file = Path(mail.add_user(address))
            adapter = dd.create_channel_adapter(
                tenant_key=tenant,
                name="bench",
                provider="memory",
                from_address=address,
                health_state="active",
                config={
                    "inbound": inbound_config(mail, address, password_file, folders=("INBOX",))
                },
            )
            pool = dd.create_adapter_pool(tenant_key=tenant, name="p")
            dd.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id, weight=1)
            seq = dd.create_sequence(tenant_key=tenant, key="s")
            version = dd.create_sequence_version(
                seq.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
            )
            for i, delay in enumerate((0, 86400)):
                dd.create_step(
                    version.id,
                    tenant_key=tenant,
                    key=f"s{i}",
                    position=i,
                    subject_template="Hello",
                    body_template="Hi",
                    delay_seconds=delay,
                )
            pump = PumpProcess(
                settings,
                workdir / "pump.log",
                args=("--adapter", adapter.id, "--refresh-seconds", "0.5"),
            )
            enrollments = [
                str(
                    dd.enroll(
                        tenant_key=tenant,
                        sequence_id=seq.id,
                        subscriber_id=f"p{i}",
                        recipient=f"p{i}@prospects.test",
                    ).enrollment_id
                )
                for i in range(replies)
            ]
        with psycopg.connect(settings.database_url, autocommit=True) as conn:

            def sent() -> dict[str, str] | None:
                found = conn.execute(
                    "SELECT enrollment_id::text, out_message_id FROM dripdrop.step_executions"
                    " WHERE enrollment_id = ANY(%s::uuid[]) AND status = 'sent'",
                    (enrollments,),
                ).fetchall()
                return dict(found) if len(found) == replies else None

            out_ids = _wait(sent, 180, f"{replies} first sends")
            _wait(
                lambda: "connected (IDLE)" in pump.log_path.read_text(errors="replace"),
                60,
                "the pump in IDLE",
            )
            latencies: list[float] = []
            for enrollment in enrollments:
                _, raw = reply(address, out_ids[enrollment])
                with smtplib.LMTP(mail.host, mail.lmtp_port) as lmtp:
                    lmtp.sendmail("prospect@prospects.test", [address], raw)
                started = time.perf_counter()  # LMTP accepted: the message is in the mailbox
                while True:
                    row = conn.execute(
                        "SELECT state FROM dripdrop.enrollments WHERE id = %s", (enrollment,)
                    ).fetchone()
                    if row and row[0] == "replied":
                        break
                    if time.perf_counter() - started > 60:
                        raise RuntimeError("reply not applied within 60 s")
                    time.sleep(0.002)
                latencies.append(time.perf_counter() - started)
            later = conn.execute(
                "SELECT count(*) FROM dripdrop.step_executions"
                " WHERE enrollment_id = ANY(%s::uuid[])",
                (enrollments,),
            ).fetchone()
        assert pump.stop() == 0, pump.log_tail()
        assert worker.stop() == 0, worker.log_tail()
    finally:
        if pump is not None and pump.alive():
            pump.kill()
        if worker.alive():
            worker.kill()
        delete_topics_with_prefix(settings)
    ordered = sorted(latencies)
    return {
        "replies": replies,
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "executions": later[0] if later else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pump-bench-") as tmp:
        result = run(args.replies, Path(tmp))
    print(json.dumps(result))
    print(
        f"reply-to-stop via IMAP IDLE: {result['replies']} replies,"
        f" p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms"
        f" (target p99 <= 2000 ms); step executions {result['executions']}"
        f" (one per enrollment: no later step sent)"
    )


if __name__ == "__main__":
    main()

"""One-click unsubscribe latency (issue 14 target: POST → enrollment stopped ≤ 2 s).

Run: ``.venv/bin/python -m benchmarks.unsubscribe_bench [--unsubscribes 30]``.

One worker on fresh topics, ``dripdrop web``'s app on a real uvicorn server in this
process, a two-step outbound sequence over a memory-provider mailbox (the second step a
month away, so every enrollment stays active). After the enrollments are in PostgreSQL,
each is unsubscribed in turn with the RFC 8058 POST; the latency is from sending the POST
to its enrollment row reading ``stopped`` (the worker applied the unsubscribe and its sink
committed the row), polled every 10 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import uvicorn

from benchmarks.pipeline_bench import author, forget_run
from dripdrop_core.unsubscribe import ONE_CLICK, make_token
from streams.admin import create_topics, delete_topics_with_prefix
from streams.api import DripDrop
from streams.localrun import WorkerProcess
from streams.settings import Settings
from streams.web import create_app

KEY_ENV = "DRIPDROP_BENCH_UNSUBSCRIBE_KEY"


def _state(conn: psycopg.Connection[tuple[object, ...]], enrollment_id: str) -> object:
    row = conn.execute(
        "SELECT state FROM dripdrop.enrollments WHERE id = %s", (enrollment_id,)
    ).fetchone()
    return row[0] if row else None


def main() -> None:
    parser = argparse.ArgumentParser(description="one-click unsubscribe latency")
    parser.add_argument("--unsubscribes", type=int, default=30)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="dripdrop-bench-"))
    os.environ[KEY_ENV] = uuid.uuid4().hex
    settings = Settings().model_copy(
        update={
            "topic_prefix": f"bench{run}.",
            "app_id": f"bench-{run}",
            "data_dir": str(tmp / "data"),
            "unsubscribe_key": f"env:{KEY_ENV}",
        }
    )
    create_topics(settings)
    worker = WorkerProcess(settings, tmp / "worker.log")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with DripDrop(settings) as dd:
            world = author(dd, run)[0]
            ids = [
                (
                    str(
                        dd.enroll(
                            tenant_key=world["tenant"],
                            sequence_id=world["sequence_id"],
                            subscriber_id=f"u{i}",
                            recipient=f"u{i}@bench.example",
                            data={"name": f"U{i}"},
                        ).enrollment_id
                    ),
                    f"u{i}@bench.example",
                )
                for i in range(args.unsubscribes)
            ]
        latencies = []
        with (
            psycopg.connect(settings.database_url, autocommit=True) as conn,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
        ):
            deadline = time.monotonic() + 120
            while any(_state(conn, e) != "active" for e, _ in ids):
                if time.monotonic() > deadline or not worker.alive():
                    raise RuntimeError(f"enrollments not active; see {worker.log_path}")
                time.sleep(0.2)
            for enrollment_id, recipient in ids:
                token = make_token(
                    os.environ[KEY_ENV].encode(), world["tenant"], enrollment_id, recipient
                )
                started = time.perf_counter()
                assert http.post(f"/u/{token}", content=ONE_CLICK).status_code == 200
                while _state(conn, enrollment_id) != "stopped":
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"{enrollment_id} not stopped after 30 s")
                    time.sleep(0.01)
                latencies.append(time.perf_counter() - started)
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        print(
            f"one-click POST -> enrollment stopped over {len(latencies)} unsubscribes:"
            f" p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms,"
            f" max {max(latencies) * 1000:.0f} ms (target <= 2000 ms)"
        )
    finally:
        server.should_exit = True
        thread.join(10)
        worker.stop()
        delete_topics_with_prefix(settings)
        forget_run(settings, run)


if __name__ == "__main__":
    main()

"""Suppression-list import through one real worker (issue 14 item 4).

Run: ``.venv/bin/python -m benchmarks.suppression_bench [--entries 100000] [--runs 3]``.

Each run writes a CSV of ``--entries`` addresses (one in ten a domain entry), starts a
worker on fresh topics, then times two things:

* **accepted**: ``DripDrop.import_suppressions(read_csv(file))`` — parsing, validation,
  Avro encoding and producing every record until the broker acknowledged it (what
  ``dripdrop suppressions import`` waits for);
* **applied**: from the start of the import until the last ``dripdrop.suppressions`` row
  is in PostgreSQL (the worker applied every entry to its ``index`` table and its sink
  wrote the rows): when ``list`` / ``export`` show the whole file.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from streams.admin import create_topics, delete_topics_with_prefix
from streams.api import DripDrop
from streams.localrun import WorkerProcess
from streams.settings import Settings
from streams.suppressions import read_csv


def _rows(settings: Settings, tenant: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM dripdrop.suppressions WHERE tenant_key = %s", (tenant,)
        ).fetchone()
    return int(found[0]) if found else 0


def _wait_ready(worker: WorkerProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while "[^Worker]: Ready" not in worker.log_path.read_text(errors="replace"):
        if not worker.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start; see {worker.log_path}")
        time.sleep(0.2)


def one_run(base: Settings, entries: int) -> tuple[float, float]:
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="dripdrop-bench-"))
    settings = base.model_copy(
        update={"topic_prefix": f"bench{run}.", "app_id": f"bench-{run}", "data_dir": str(tmp)}
    )
    tenant = f"bench-{run}-supp"
    csv_path = tmp / "list.csv"
    with csv_path.open("w", encoding="utf-8") as f:
        f.write("email,reason,source\n")
        for i in range(entries):
            entry = f"d{i}.example" if i % 10 == 0 else f"p{i}@x{i % 97}.example"
            f.write(f"{entry},manual,bench\n")
    create_topics(settings)
    worker = WorkerProcess(settings, tmp / "worker.log")
    try:
        _wait_ready(worker)
        with DripDrop(settings) as dd, csv_path.open(encoding="utf-8", newline="") as f:
            started = time.perf_counter()
            result = dd.import_suppressions(read_csv(f), tenant_key=tenant)
            accepted = time.perf_counter() - started
        assert result.accepted == entries and not result.invalid, result.invalid[:3]
        while _rows(settings, tenant) < entries:
            if not worker.alive():
                raise RuntimeError(f"worker died; see {worker.log_path}")
            time.sleep(0.1)
        applied = time.perf_counter() - started
        return entries / accepted, entries / applied
    finally:
        worker.stop()
        delete_topics_with_prefix(settings)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM dripdrop.suppressions WHERE tenant_key = %s", (tenant,))


def main() -> None:
    parser = argparse.ArgumentParser(description="suppression import rate")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    accepted, applied = [], []
    for i in range(args.runs):
        a, b = one_run(Settings(), args.entries)
        accepted.append(a)
        applied.append(b)
        print(
            f"run {i + 1}: {args.entries:,} entries accepted by the broker at {a:,.0f}/s,"
            f" in PostgreSQL (applied by the worker) at {b:,.0f}/s",
            flush=True,
        )
    print(
        f"median over {args.runs} runs: import accepted {statistics.median(accepted):,.0f}"
        f" entries/s, applied {statistics.median(applied):,.0f} entries/s"
        f" ({args.entries / statistics.median(applied):.1f} s for {args.entries:,})"
    )


if __name__ == "__main__":
    main()

"""``dripdrop suppressions add | import | remove | list | export`` with a real worker."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import CliResult
from tests.integration.pipeline_support import start_worker, tenant
from tests.integration.support import WorkerProcess, wait_for


def _listed(cli: Callable[..., CliResult], key: str, *extra: str) -> list[dict[str, str]]:
    result = cli("suppressions", "list", "--tenant", key, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert isinstance(listed, list)
    return listed


def test_cli_suppressions_round_trip(
    settings: Settings,
    cli: Callable[..., CliResult],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    key, other = tenant(), tenant()
    worker = start_worker(worker_factory)
    source = tmp_path / "list.csv"
    source.write_text(
        "email,reason,source\n"
        "Ann@Example.org,bounce,esp\n"
        "bad entry,manual,\n"
        "example.net,,\n"
        "cid@example.org,because,\n",
        encoding="utf-8",
    )
    imported = cli("suppressions", "import", str(source), "--tenant", key, "--json")
    assert imported.exit_code == 5, imported.stderr  # invalid lines reported, the rest imported
    report = json.loads(imported.stdout)
    assert (report["accepted"], report["invalid"]) == (2, 2)
    assert [line.split(":")[0] for line in report["first_invalid"]] == ["line 3", "line 5"]

    added = cli("suppressions", "add", "bob@example.org", "--tenant", key, "--json")
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout)[0]["command"] == "suppress"
    assert cli("suppressions", "add", "x@y.example", "--tenant", other).exit_code == 0
    refused = cli("suppressions", "add", "nobody", "--tenant", key, "--reason", "manual")
    assert refused.exit_code == 5 and "not an email address or domain" in refused.stderr

    def listed(count: int) -> list[dict[str, str]] | None:
        assert worker.alive(), worker.log_tail()
        found = _listed(cli, key)
        return found if len(found) == count else None

    entries = wait_for(lambda: listed(3), what="three entries")
    assert {(e["entry"], e["kind"], e["reason"], e["source"]) for e in entries} == {
        ("ann@example.org", "address", "bounce", "esp"),
        ("@example.net", "domain", "manual", "import:list.csv"),
        ("bob@example.org", "address", "manual", "cli"),
    }
    assert [e["entry"] for e in _listed(cli, key, "--kind", "domain")] == ["@example.net"]

    exported = tmp_path / "out.csv"
    assert cli("suppressions", "export", "--tenant", key, "-o", str(exported)).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(exported.read_text(encoding="utf-8"))))
    assert sorted(r["entry"] for r in rows) == [
        "@example.net",
        "ann@example.org",
        "bob@example.org",
    ]

    assert cli("suppressions", "remove", "example.net", "--tenant", key).exit_code == 0
    remaining = wait_for(lambda: listed(2), what="entry removed")
    assert "@example.net" not in {e["entry"] for e in remaining}
    # The other tenant's list is its own.
    theirs = wait_for(lambda: _listed(cli, other) or None, what="the other tenant's entry")
    assert [(e["entry"], e["source"]) for e in theirs] == [("x@y.example", "cli")]

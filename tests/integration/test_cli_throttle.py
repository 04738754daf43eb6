"""Recipient-domain throttles through the CLI (SPEC §13): set, replace (same id), list,
remove, and the refusals (an address, no limit, a zero limit: exit 5; another tenant's
adapter or throttle: exit 4)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import CliResult

Cli = Callable[..., CliResult]


def _json(result: CliResult) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_sets_replaces_lists_and_removes_throttles(cli: Cli) -> None:
    t = ("--tenant", f"acct_{uuid.uuid4().hex[:12]}")
    other = ("--tenant", f"acct_{uuid.uuid4().hex[:12]}")
    adapter = _json(cli("adapter", "create", *t, "--name", "m", "--json"))
    stranger = _json(cli("adapter", "create", *other, "--name", "m", "--json"))

    wide = _json(cli("throttle", "set", *t, "--domain", "@Gmail.com", "--per-hour", "20", "--json"))
    assert (wide["domain"], wide["adapter_id"], wide["per_hour"]) == ("gmail.com", None, 20)
    again = _json(cli("throttle", "set", *t, "--domain", "gmail.com", "--per-day", "50", "--json"))
    assert (again["id"], again["per_hour"], again["per_day"]) == (wide["id"], None, 50)
    own = _json(
        cli(
            "throttle",
            "set",
            *t,
            "--domain",
            "gmail.com",
            "--adapter",
            adapter["id"],
            "--per-hour",
            "5",
            "--json",
        )  # fmt: skip
    )
    assert own["id"] != wide["id"]
    listed = _json(cli("throttle", "list", *t, "--json"))
    assert [(x["adapter_id"], x["per_hour"], x["per_day"]) for x in listed] == [
        (None, None, 50),
        (adapter["id"], 5, None),
    ]

    refused = {
        "an address": cli("throttle", "set", *t, "--domain", "a@gmail.com", "--per-hour", "1"),
        "no limit": cli("throttle", "set", *t, "--domain", "gmail.com"),
        "a zero limit": cli("throttle", "set", *t, "--domain", "x.com", "--per-day", "0"),
    }
    for what, result in refused.items():
        assert result.exit_code == 5, (what, result.stdout, result.stderr)
    foreign = cli(
        "throttle", "set", *t, "--domain", "x.com", "--adapter", stranger["id"], "--per-day", "1"
    )
    assert foreign.exit_code == 4, foreign.stderr
    assert cli("throttle", "remove", own["id"], *other).exit_code == 4

    assert _json(cli("throttle", "remove", own["id"], *t, "--json"))["id"] == own["id"]
    assert [x["id"] for x in _json(cli("throttle", "list", *t, "--json"))] == [wide["id"]]

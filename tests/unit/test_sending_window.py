"""The step's sending window (SPEC §13): one name, one meaning (the hours it MAY send), its
defaults, the config records written before the rename, and the CLI options that set it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dripdrop_core.models import SendingWindow, Step
from streams.cli.main import app as cli_app
from streams.cli.sequence import sending_window

STEP = {"id": "s", "version_id": "v", "tenant_key": "t", "key": "k", "position": 0}


def test_sending_window_defaults_to_eight_to_twenty_one() -> None:
    assert SendingWindow() == SendingWindow(start_hour=8, end_hour=21)


def test_step_config_record_from_before_the_rename_keeps_its_window() -> None:
    """``quiet_hours`` always held the allowed hours; a compacted config record that still
    carries it loads with the same window under the new name."""
    record = json.dumps({**STEP, "quiet_hours": {"start_hour": 22, "end_hour": 7}})
    old = Step.model_validate_json(record)
    assert old.sending_window == SendingWindow(start_hour=22, end_hour=7)
    dumped = old.model_dump(mode="json")
    assert "quiet_hours" not in dumped
    assert dumped["sending_window"] == {"start_hour": 22, "end_hour": 7}
    assert Step.model_validate(dumped) == old


def test_cli_window_options_default_the_missing_end() -> None:
    assert sending_window(None, None) is None
    assert sending_window(22, 7) == {"start_hour": 22, "end_hour": 7}
    assert sending_window(9, None) == {"start_hour": 9, "end_hour": 21}
    assert sending_window(None, 18) == {"start_hour": 8, "end_hour": 18}


def test_cli_step_help_says_sending_window_and_never_quiet_hours() -> None:
    result = CliRunner().invoke(cli_app, ["step", "create", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--window-start" in result.output and "--window-end" in result.output
    assert "may send" in result.output
    assert "quiet" not in result.output.lower()


def test_cli_quiet_options_are_gone() -> None:
    result = CliRunner().invoke(
        cli_app,
        [
            "step",
            "create",
            "v",
            "--tenant",
            "t",
            "--key",
            "k",
            "--position",
            "0",
            "--quiet-start",
            "22",
            "--quiet-end",
            "7",
        ],
    )
    assert result.exit_code == 2  # usage error: no such option

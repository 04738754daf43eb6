"""``make services`` refuses clearly, without hanging, when its ports belong to someone else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_services_up_with_ports_taken_by_others_fails_fast_with_clear_message(
    services: Settings, tmp_path: Path
) -> None:
    # Another project home: the running servers on 15432/19092 are not "ours" from there.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPDROP_")}
    env["DRIPDROP_HOME"] = str(tmp_path / "home")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "services.py"), "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is taken by a process this project did not start" in result.stderr
    assert "DRIPDROP_" in result.stderr  # tells the user how to use their own server instead
    assert time.monotonic() - started < 30

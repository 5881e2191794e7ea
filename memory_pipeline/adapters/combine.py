"""Use several adapters at once: core (always) plus topic adapters, live on one base or pre-combined.

Servers such as vLLM take one LoRA per request (``--lora-modules``), so a core+topic pair is exported as a
single adapter. 'cat' stacks the LoRA matrices, so the combined delta is exactly the weighted sum of
the parts; 'linear' averages them into the same rank (smaller, approximate, needs equal r).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from memory_pipeline.adapters import registry
from memory_pipeline.adapters.base_model import load_base_model, unused_adapter_name
from memory_pipeline.adapters.manifest import COMBINED_FILE, CombinedRecord, SourceWeight, write_record
from memory_pipeline.atomic import replace_dir
from memory_pipeline.config import Config
from memory_pipeline.errors import StoreError


def resolve_versions(
    config: Config, names: Sequence[str], *, versions: Mapping[str, str] | None = None, root: Path | None = None
) -> list[registry.AdapterVersion]:
    """The version to use per name: the pinned one, else ``current``."""
    if len(set(names)) != len(names):
        raise ValueError(f"adapter names repeat: {list(names)}")
    base = Path(root) if root is not None else config.adapters_dir
    chosen = []
    for name in names:
        config.adapter(name)  # an unknown name is named as unknown, not as "no current version"
        pinned = (versions or {}).get(name)
        version = (
            registry.load_version(base / name / pinned) if pinned else registry.current_version(config, name, root=root)
        )
        if version is None:
            raise StoreError(
                f"adapter {name!r} has no current version (none passed the gate yet; see `adapters activate`)"
            )
        chosen.append(version)
    return chosen


def load_adapters(
    config: Config,
    names: Sequence[str],
    *,
    versions: Mapping[str, str] | None = None,
    device: str | None = None,
    root: Path | None = None,
) -> tuple[Any, Any, list[str]]:
    """Base model with each named adapter loaded under its own PEFT name; returns (model, tokenizer, names)."""
    from peft import PeftModel

    chosen = resolve_versions(config, names, versions=versions, root=root)
    base = load_base_model(config.training, device=device or config.training.device, cache_dir=config.base_models_dir)
    for version in chosen:
        if version.manifest.base.hash != base.base_hash:
            raise StoreError(
                f"{version.path}: trained on base {version.manifest.base.id} ({version.manifest.base.hash[:12]}), "
                f"but training.base_model is {base.base_id} ({base.base_hash[:12]})"
            )
    first, *rest = chosen
    model = PeftModel.from_pretrained(base.model, str(first.path), adapter_name=first.name)
    loaded = [first.name]
    for version in rest:
        name = unused_adapter_name(model, version.name)
        model.load_adapter(str(version.path), adapter_name=name)
        loaded.append(name)
    model.eval()
    return model, base.tokenizer, loaded


def combine_adapters(
    model: Any,
    adapter_names: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    combination_type: Literal["cat", "linear"] = "cat",
) -> str:
    """Add one adapter that is the weighted combination of ``adapter_names``, make it active, return its name."""
    weights = list(weights) if weights is not None else [1.0] * len(adapter_names)
    if len(weights) != len(adapter_names):
        raise ValueError(f"{len(weights)} weights for {len(adapter_names)} adapters")
    if combination_type == "linear":
        ranks = {name: model.peft_config[name].r for name in adapter_names}
        if len(set(ranks.values())) > 1:
            raise ValueError(f"combination 'linear' needs adapters of equal r, got {ranks}; use 'cat'")
    name = unused_adapter_name(model, "__".join(adapter_names))
    model.add_weighted_adapter(list(adapter_names), weights, name, combination_type=combination_type)
    model.set_adapter(name)
    return name


def export_combined(
    config: Config,
    names: Sequence[str],
    output_dir: Path,
    weights: Sequence[float] | None = None,
    *,
    combination_type: Literal["cat", "linear"] = "cat",
    versions: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> Path:
    """Write the combination of ``names`` as one plain PEFT adapter folder (replacing ``output_dir``)."""
    sources = resolve_versions(config, names, versions=versions, root=root)
    pinned = {v.name: v.version for v in sources}  # what is loaded is what combined.json names, even if current moves
    model, _, loaded = load_adapters(config, names, versions=pinned, device="cpu", root=root)
    combined = combine_adapters(model, loaded, weights=weights, combination_type=combination_type)
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".tmp-{output_dir.name}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(str(tmp), selected_adapters=[combined], save_embedding_layers=False)
        saved = tmp / combined  # PEFT puts every adapter but 'default' in a subfolder
        record = CombinedRecord(
            combination_type=combination_type,
            sources=[
                SourceWeight(name=v.name, version=v.version, weight=w)
                for v, w in zip(sources, weights if weights is not None else [1.0] * len(names), strict=False)
            ],
            base=sources[0].manifest.base,
            r=model.peft_config[combined].r,
        )
        write_record(saved / COMBINED_FILE, record)
        replace_dir(saved, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir

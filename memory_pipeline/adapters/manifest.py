"""What an adapter version records: ``version.json`` (the manifest), ``metrics.json`` (the figures the gate read)
and ``current.json`` (the pointer); what an export records (``combined.json``, ``serving.json``). One model and one
reader/writer each, so training, the gate, the CLI and the Dagster UI read the same fields the same way.

Fields added after the first versions were written have defaults, so older versions still load; fields this code
does not know are kept (``extra="allow"``), so a record written by newer code loses nothing when read here.
Perplexity may be infinite: it is written as JSON's ``Infinity``, as ``json.dumps`` always did.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.errors import StoreError, validation_problems

MANIFEST_FILE = "version.json"
METRICS_FILE = "metrics.json"
CURRENT_FILE = "current.json"
COMBINED_FILE = "combined.json"
SERVING_FILE = "serving.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")


class DatasetRef(_Record):
    """The dataset version a run learnt from; ``path`` is relative to the storage root when it lies inside it."""

    version: str
    adapter: str = ""
    content_hash: str = ""
    path: str = ""


class BaseRef(_Record):
    id: str = ""
    hash: str = ""  # the base weights' hash: an adapter is only loaded onto the base it was trained on


class TrainingManifest(_Record):
    """What a training run records about itself before its version has a name."""

    dataset: DatasetRef | None = None
    base: BaseRef = Field(default_factory=BaseRef)
    mode: str = ""
    parent: str | None = None  # the version continued from (mode 'continue')
    previous_current: str | None = None


class AdapterManifest(TrainingManifest):
    """``version.json``: the run's record plus the name the registry gave the version."""

    name: str
    version: str
    created: str


class GenerationFigures(_Record):
    """The judged answers to the gate prompts, summarised per model (see adapters/judge.py)."""

    adapter: dict[str, float | int] = Field(default_factory=dict)
    base: dict[str, float | int] = Field(default_factory=dict)


class AdapterMetrics(_Record):
    """``metrics.json``: every figure the gate read, its verdict, and how the training run went."""

    eval_ppl_base: float | None = None
    eval_ppl_adapter: float | None = None
    eval_ppl_previous: float | None = None
    heldout_ppl_base: float | None = None
    heldout_ppl_adapter: float | None = None
    heldout_ppl_previous: float | None = None
    eval_tokens: int = 0
    eval_examples: int = 0
    heldout_tokens: int = 0
    heldout_examples: int = 0
    generation: GenerationFigures | None = None
    similarity_adapter: float | None = None
    similarity_base: float | None = None
    similarity_examples: int = 0
    gate_passed: bool = False
    gate_reasons: list[str] = Field(default_factory=list)  # one line per check, "pass: ..." or "fail: ..."
    forgetting_margin: float | None = None
    steps: int | None = None
    tokens_per_second: float | None = None
    seconds: float | None = None
    stopped: str | None = None  # "completed" or "time budget"

    @property
    def failed_reasons(self) -> list[str]:
        return [reason for reason in self.gate_reasons if reason.startswith("fail:")]


class PointerMove(_Record):
    version: str
    moved_at: str = ""
    by: str = ""
    reason: str = ""


class CurrentPointer(PointerMove):
    """``current.json``: the version in use, who moved it there and why, and where it pointed before."""

    history: list[PointerMove] = Field(default_factory=list)


class SourceWeight(_Record):
    """One adapter version in an exported or combined adapter, with its weight there."""

    name: str
    version: str
    weight: float = 1.0


class CombinedRecord(_Record):
    """``combined.json`` in a combined adapter's folder: what it was combined from, and how."""

    combination_type: str
    sources: list[SourceWeight]
    base: BaseRef
    r: int


class ServedModule(_Record):
    path: str  # relative to the export folder
    sources: list[SourceWeight]
    r: int


class ServingRecord(_Record):
    """``serving.json`` in an export folder: the base to serve, every LoRA module, and the ``vllm serve`` command."""

    base: str
    base_hash: str
    modules: dict[str, ServedModule]
    max_lora_rank: int
    command: str


_Model = TypeVar("_Model", bound=BaseModel)


def read_record(path: Path, model: type[_Model]) -> _Model:
    """One of these files, validated; a damaged one names its path instead of failing somewhere later."""
    path = Path(path)
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise StoreError(f"{path}: not a valid {model.__name__}: {validation_problems(exc, 'file')}") from None


def write_record(path: Path, record: BaseModel) -> None:
    """Write atomically: a reader sees the old file or the new one (version folders are also renamed whole)."""
    atomic_write_text(path, record.model_dump_json(indent=2) + "\n")

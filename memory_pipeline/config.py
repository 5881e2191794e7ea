"""The one config file that drives every stage, validated with messages that name the key.

Resolution order: ``--config FILE`` > ``$MEMORY_PIPELINE_CONFIG`` > ``./memory_pipeline.yaml`` >
built-in defaults. ``--storage DIR`` / ``$MEMORY_PIPELINE_STORAGE`` override ``storage_root``.
Relative paths are resolved against the config file's folder, so a config can be moved with its data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memory_pipeline.errors import ConfigError
from memory_pipeline.records import Kind

CONFIG_ENV = "MEMORY_PIPELINE_CONFIG"
STORAGE_ENV = "MEMORY_PIPELINE_STORAGE"
TOKEN_ENV = "MEMORY_PIPELINE_TOKEN"
DEFAULT_CONFIG_NAME = "memory_pipeline.yaml"
DEFAULT_EMBEDDING_MODEL = "packaged:use-multilingual-v3"


class _Section(BaseModel):
    """Unknown keys, infinities and NaN are errors, and so is a boolean where a number goes
    (YAML reads ``port: true`` as a bool, which pydantic would otherwise take as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"{key}: {str(value).lower()} is a boolean; a number is expected here")
        return data


class SourcesConfig(_Section):
    """Folders (or single files) to ingest, per kind. Each is walked recursively."""

    dialogues: list[Path] = Field(
        default_factory=list, description="chat exports: ChatGPT/Claude JSON, nexus markdown, JSONL"
    )
    articles: list[Path] = Field(default_factory=list, description="PDF, Markdown, plain text, HTML")
    lectures: list[Path] = Field(default_factory=list, description="SRT, WebVTT, plain transcripts")

    def roots(self) -> list[tuple[Path, Kind]]:
        return (
            [(p, Kind.DIALOGUE) for p in self.dialogues]
            + [(p, Kind.ARTICLE) for p in self.articles]
            + [(p, Kind.LECTURE) for p in self.lectures]
        )


class IngestConfig(_Section):
    max_file_mb: float = Field(1024.0, gt=0, description="files larger than this are refused with an error")
    archive_max_members: int = Field(20_000, ge=1, description="ZIP exports with more members are refused (zip bombs)")
    archive_max_total_mb: float = Field(8000.0, gt=0, description="ZIP exports expanding to more than this are refused")
    archive_max_ratio: float = Field(
        100.0, gt=1, description="a ZIP member expanding more than this many times is refused"
    )
    prune_missing_sources: bool = Field(
        False,
        description=(
            "remove the documents of a source folder that is missing or emptied (default: keep them, report an error)"
        ),
    )


class ChunkingConfig(_Section):
    max_tokens: int = Field(
        512, ge=16, le=8192, description="chunk budget in the embedding model's own tokens (capped by its max length)"
    )
    overlap_tokens: int = Field(32, ge=0, description="article chunk overlap in tokens")
    lecture_window_seconds: float = Field(90.0, gt=0, description="lecture chunks span at most this much time")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(
                f"chunking.overlap_tokens ({self.overlap_tokens}) must be below chunking.max_tokens ({self.max_tokens})"
            )
        return self


class EmbeddingConfig(_Section):
    model: str = Field(
        DEFAULT_EMBEDDING_MODEL,
        description="'packaged:use-multilingual-v3' (bundled, multilingual), 'packaged:all-MiniLM-L6-v2' "
        "(bundled, English), or a sentence-transformers local path or hub id",
    )
    batch_size: int = Field(64, ge=1, le=4096)
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    query_prefix: str = Field("", description="prepended to queries (e5 models want 'query: ')")
    passage_prefix: str = Field("", description="prepended to passages (e5 models want 'passage: ')")


class IndexConfig(_Section):
    faiss_flat_max: int = Field(50_000, ge=1, description="below this many vectors FAISS uses an exact flat index")
    faiss_large_index: Literal["hnsw", "ivf"] = Field("hnsw", description="index type above faiss_flat_max")
    hnsw_m: int = Field(32, ge=4, le=256)
    ivf_nlist: int = Field(1024, ge=1)


class StoresConfig(_Section):
    """Where the chunk stores live when they are not under storage_root (shared or object storage)."""

    lancedb_uri: str = Field(
        "", description="LanceDB location, e.g. s3://bucket/memory/lancedb; empty = storage_root/lancedb"
    )
    faiss_dir: Path | None = Field(None, description="FAISS folder on a shared filesystem; empty = storage_root/faiss")


class SearchConfig(_Section):
    default_k: int = Field(10, ge=1, le=1000)
    default_mode: Literal["vector", "fts", "hybrid"] = "hybrid"
    max_query_chars: int = Field(4000, ge=10)
    hybrid_fts_weight: float = Field(
        0.05, ge=0.0, le=1.0, description="full text's share in hybrid fusion; vectors get the rest"
    )
    # Recall: how tiers and item scores shape a result list (memory_pipeline/index/recall.py).
    prior_weight: float = Field(
        0.3, ge=0, le=1, description="share of a hit's rank that comes from its item's (decayed) score, a ranking prior"
    )
    max_hits_per_position: int = Field(
        2, ge=1, description="at most this many hits from one dialogue turn / document section in a result list"
    )
    superseded_factor: float = Field(
        0.8, gt=0, le=1, description="rank multiplier of an item restated later (the restatement is preferred)"
    )
    time_expressions: bool = Field(
        True, description="a query naming a time span ('last week', 'два месяца назад') filters by it"
    )


class GuardConfig(_Section):
    """What the model must do whenever this adapter is active: the user's views here are not mainstream."""

    disclaimer: str = Field(
        "", description="a warning the model must give with its answer, e.g. 'this is my own view, not medical advice'"
    )
    decline_topics: list[str] = Field(default_factory=list, description="topics the model must decline to advise on")


class AdapterConfig(_Section):
    """One LoRA adapter: 'core' for the user's worldview, topic adapters on top of it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")
    description: str
    keywords: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list, description="example texts that belong to this adapter")
    contrast: list[str] = Field(
        default_factory=list,
        description="texts that touch the topic without being on it (an analogy, another sense of a keyword): "
        "an item closer to one of these, or to another adapter's texts, than to this one's is not routed here",
    )
    voice: Literal["user", "assistant"] = Field(
        "user",
        description="whose text is learned: 'user' (default: the user's own turns are the targets, the assistant's "
        "are the prompt side) or 'assistant' (the assistant's answers, only when this adapter is meant to; "
        "a proxy-recorded model's answers never are)",
    )
    system_prompt: str = ""
    guard: GuardConfig | None = Field(None, description="applied by the proxy whenever this adapter is active")
    gate_prompts: list[str] = Field(
        default_factory=list,
        description="prompts this adapter must answer sensibly to pass the gate; empty: gate.prompts",
    )


class PromoteConfig(_Section):
    """Scoring weights and tier thresholds for the memory loop."""

    signal_names: ClassVar[tuple[str, ...]] = (
        "novelty",
        "redundancy",
        "recurrence",
        "density",
        "importance",
        "quality",
        "usage",
        "recency",
    )

    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "novelty": 1.0,
            "redundancy": 1.0,
            "recurrence": 1.0,
            "density": 0.5,
            "importance": 2.0,
            "quality": 1.0,
            "usage": 0.5,
            "recency": 0.5,
        },
        description="signal name -> weight in the combined score; a signal left out weighs 0",
    )
    importance_markers: list[str] = Field(
        default_factory=lambda: ["remember this", "important", "важно", "запомни", "запомните", "#важно", "#remember"]
    )
    stance_importance: float = Field(
        0.75,
        ge=0,
        le=1,
        description="importance of an item where the user states his own view (x its stance score); a marker gives 0.8",
    )
    recency_half_life_days: float = Field(180.0, gt=0)
    rag_threshold: float = Field(0.35, ge=0, le=1)
    lora_threshold: float = Field(0.45, ge=0, le=1)
    route_threshold: float = Field(0.25, ge=-1, le=1, description="min similarity to route an item to a topic adapter")
    min_chars: int = Field(40, ge=0, description="items shorter than this are discarded as junk")
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="MinHash Jaccard for near-duplicates")
    recurrence_radius: float = Field(
        0.6, gt=-1, le=1, description="cosine at or above which another item is the same topic"
    )
    core_min_user_chars: int = Field(
        40, ge=0, description="a dialogue exchange needs this much user text to teach the core adapter"
    )
    # The lifecycle: fresh items wait in cache; long-term items fade with age and lack of use.
    cache_days: float = Field(
        7.0, ge=0, description="items dated within this many days are cache (short-term) until promotion decides"
    )
    age_half_life_days: float = Field(
        1095.0, gt=0, description="a rag item's recall score halves per this many days since it entered the memory"
    )
    unused_half_life_days: float = Field(
        365.0, gt=0, description="... and per this many days since a search last returned it"
    )
    restate_similarity: float = Field(
        0.8, gt=-1, le=1, description="cosine at or above which a later item restates an earlier one's view"
    )
    lora_min_own_chars: int = Field(
        40,
        ge=0,
        description="content floor: the user's own text (greetings, thanks, filler removed) needs this many "
        "characters to reach a LoRA tier",
    )

    @field_validator("weights")
    @classmethod
    def _known_signals(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(cls.signal_names))
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}; known: {', '.join(cls.signal_names)}")
        negative = sorted(name for name, weight in value.items() if weight < 0)
        if negative:
            raise ValueError(f"weights must be >= 0, negative for {negative}")
        if not any(weight > 0 for weight in value.values()):
            raise ValueError("at least one weight must be > 0")
        return value

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> PromoteConfig:
        if self.lora_threshold < self.rag_threshold:
            raise ValueError("promote.lora_threshold must be >= promote.rag_threshold")
        return self


class DatasetsConfig(_Section):
    """How promoted items become a versioned LoRA training set (token counts are cl100k tokens)."""

    min_new_examples: int = Field(5000, ge=1, description="new promoted examples that trigger a dataset build")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of source documents whose examples go to eval")
    min_tokens: int = Field(
        8, ge=0, description="examples whose target (the learned turn or text) is shorter than this are dropped"
    )
    max_tokens: int = Field(2048, ge=16, description="examples longer than this (context included) are dropped")
    context_tokens: int = Field(
        1024, ge=0, description="earlier turns of the conversation kept before a chat example's prompt"
    )
    token_budget: int = Field(
        5_000_000, ge=1000, description="max tokens per dataset version; highest scores kept first"
    )
    scrub_pii: bool = Field(
        True, description="replace emails, phone numbers and secrets with placeholders like <EMAIL>"
    )
    languages: list[str] = Field(default_factory=list, description="keep only these language guesses; empty keeps all")
    near_duplicate_threshold: float = Field(
        0.85, gt=0, le=1, description="MinHash Jaccard at or above which two examples are near-duplicates"
    )
    decontamination_ngram: int = Field(
        13, ge=5, description="eval examples sharing a word n-gram this long with train are dropped"
    )
    seed: int = Field(13, description="seeds the train/eval split by document")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> DatasetsConfig:
        if self.min_tokens >= self.max_tokens:
            raise ValueError(
                f"datasets.min_tokens ({self.min_tokens}) must be below datasets.max_tokens ({self.max_tokens})"
            )
        return self


class TrainingConfig(_Section):
    base_model: str = Field(
        "packaged:SmolLM2-135M-Instruct",
        description="hub id, local dir, GGUF file, or 'packaged:SmolLM2-135M-Instruct'",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside base_model when it is a folder")
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1 uses epochs")
    max_seq_length: int = Field(512, ge=16)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    time_budget_minutes: float = Field(30.0, gt=0)
    mode: Literal["retrain", "continue"] = Field(
        "retrain", description="retrain from base on the cumulative set, or continue with replay"
    )
    replay_fraction: float = Field(0.3, ge=0, le=1)
    forgetting_margin: float = Field(
        0.05, ge=0, description="allowed relative perplexity rise on the general held-out set"
    )
    device: str = "auto"
    seed: int = 13
    checkpoint_every_steps: int = Field(50, ge=1, description="optimizer steps between resumable checkpoints")
    eval_max_examples: int = Field(200, ge=1, description="eval/held-out examples scored per perplexity (first N)")
    sample_prompts: int = Field(3, ge=0, description="eval prompts answered before/after training for a person to read")
    sample_max_new_tokens: int = Field(64, ge=1)
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none", description="load the base in 8 or 4 bit for QLoRA (bitsandbytes, CUDA only); none: the load dtype"
    )
    packing: bool = Field(
        False, description="pack several short examples into one max_seq_length row (TRL best-fit); off: padded batches"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~30% slower"
    )
    check_memory: bool = Field(
        True, description="estimate memory before loading the base and refuse when it will not fit"
    )


class GenerationConfig(_Section):
    """How the local models answer (chat, gate answers, before/after samples)."""

    max_new_tokens: int = Field(200, ge=1, description="longest chat reply")
    do_sample: bool = Field(False, description="sample instead of greedy decoding")
    temperature: float = Field(0.7, gt=0, description="used only when do_sample")
    top_p: float = Field(0.9, gt=0, le=1, description="used only when do_sample")
    repetition_penalty: float = Field(
        1.2, ge=1.0, description="penalises tokens already in the prompt or reply; 1.0 = off (small bases then echo)"
    )


class GateConfig(_Section):
    """What an adapter's own answers must look like to become current (besides perplexity)."""

    prompts: list[str] = Field(
        default_factory=lambda: ["Что ты думаешь о локальных LLM?", "What matters most when learning something new?"],
        description="prompts answered by adapters without their own gate_prompts",
    )
    max_new_tokens: int = Field(64, ge=8, description="answer length generated per gate prompt")
    min_distinct_2: float = Field(0.5, ge=0, le=1, description="share of distinct word bigrams, in every answer")
    min_distinct_3: float = Field(0.6, ge=0, le=1, description="share of distinct word trigrams, in every answer")
    max_repeated_ngram: int = Field(6, ge=1, description="longest word n-gram allowed to occur twice in one answer")
    max_echo: float = Field(0.6, ge=0, le=1, description="share of a prompt's words an answer may copy in one run")
    min_language_match: float = Field(0.5, ge=0, le=1, description="share of answers in the prompt's language")
    min_words: int = Field(3, ge=1, description="shortest acceptable answer, in words (mean over prompts)")
    similarity_examples: int = Field(
        8,
        ge=0,
        description="eval prompts with the user's own answers; adapter answers must be closer to them than the base's",
    )


class ScheduleConfig(_Section):
    nightly_cron: str = Field("0 3 * * *", description="cron for the nightly run")
    timezone: str = "UTC"
    sensor_interval_seconds: int = Field(60, ge=5)
    settle_seconds: float = Field(
        10.0, ge=0, description="the file sensor waits until changes stop for this long, so a burst is one run"
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name like 'Europe/Moscow')") from None
        return value


class ServiceConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    token: str | None = Field(None, description="bearer token; also $MEMORY_PIPELINE_TOKEN; required off loopback")
    upstream_url: str | None = Field(None, description="OpenAI-compatible server the proxy forwards to")
    upstream_api_key: str | None = None
    memory_token_budget: int = Field(800, ge=0)
    memory_k: int = Field(5, ge=0)
    model_adapters: dict[str, str] = Field(default_factory=dict, description="requested model -> LoRA name at upstream")
    # The proxy as a drop-in OpenAI endpoint (memory_pipeline/service/proxy.py).
    system_prompt: str = Field(
        "",
        description="the user's worldview instructions, prepended to every chat through the proxy; "
        "empty: his newest exported profile",
    )
    memory_min_similarity: float = Field(
        0.3, ge=-1, le=1, description="a memory is injected only when its cosine to the query reaches this"
    )

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("token is blank; give a real token, or null for none")
        return value

    def resolved_token(self) -> str | None:
        """The bearer token: from the config, else from $MEMORY_PIPELINE_TOKEN; None means no auth."""
        from_env = os.environ.get(TOKEN_ENV)
        if self.token is None and from_env and not from_env.strip():
            raise ConfigError(f"${TOKEN_ENV} is blank; give a real token, or unset it")
        return self.token or from_env or None


class LimitsConfig(_Section):
    """Bounds on untrusted input (source files, HTTP requests), so one hostile or broken input costs an
    error naming it, not the memory, the time or the process of everything else."""

    max_nesting_depth: int = Field(256, ge=8, le=900, description="JSON and HTML nested deeper than this are refused")
    max_chunks_per_document: int = Field(
        5000, ge=1, description="chunks indexed per document; the rest is left out, with a warning"
    )
    max_request_mb: float = Field(16.0, gt=0, le=1024, description="HTTP request bodies larger than this get 413")
    max_message_chars: int = Field(
        1_000_000, ge=1, description="a message longer than this is refused by /dialogues and the proxy"
    )
    upstream_timeout_seconds: float = Field(
        600.0, gt=0, le=86400, description="the proxy gives up on the model server after this long"
    )


def _numeric(annotation: Any) -> bool:
    """A number field (int or float, maybe optional), which a YAML boolean must not fill."""
    options = getattr(annotation, "__args__", None) or (annotation,)
    return bool({int, float} & set(options)) and bool not in options


# --- scale-out (issue 15): executor and partitioned embedding ---
class ScaleOutConfig(_Section):
    """How a run's steps fan out: Dagster's executor, and how many partitions embedding work is split into."""

    executor: Literal["multiprocess", "in_process", "dask", "celery", "k8s"] = Field(
        "multiprocess", description="Dagster executor of every job; dask, celery and k8s need the extra of that name"
    )
    executor_config: dict[str, Any] = Field(
        default_factory=dict, description="the executor's own config (Dagster checks it against the executor's schema)"
    )
    embed_partitions: int = Field(
        1,
        ge=1,
        le=256,
        description="document-hash ranges embedded as parallel steps before the one committing step; 1 = no fan-out",
    )
    ingest_partitions: int = Field(
        1,
        ge=1,
        le=256,
        description=(
            "source-path hash ranges parsed as parallel steps before each kind's committing step; 1 = no fan-out"
        ),
    )


# --- end scale-out ---


def _default_adapters() -> list[AdapterConfig]:
    return [
        AdapterConfig(
            name="core",
            description=(
                "The user's own worldview and way of thinking: opinions, arguments, explanations, plans, values."
            ),
            voice="user",
            system_prompt="You think and answer the way the user does.",
        )
    ]


class Config(_Section):
    """The whole configuration. See memory_pipeline.yaml for the documented defaults."""

    storage_root: Path = Path("storage")
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    stores: StoresConfig = Field(default_factory=StoresConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    adapters: list[AdapterConfig] = Field(default_factory=_default_adapters)
    datasets: DatasetsConfig = Field(default_factory=DatasetsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    scaleout: ScaleOutConfig = Field(default_factory=ScaleOutConfig)
    config_path: Path | None = Field(
        None, exclude=True, description="file this config was read from (set by the loader)"
    )

    @model_validator(mode="after")
    def _adapters_valid(self) -> Config:
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapters: names must be unique, got {names}")
        if "core" not in names:
            raise ValueError("adapters: a 'core' adapter is required (the user's own worldview)")
        return self

    def source_roots(self) -> list[tuple[Path, Kind]]:
        """Configured source folders plus the service's inbox, which is ingested as dialogues."""
        return [*self.sources.roots(), (self.inbox_dir, Kind.DIALOGUE)]

    def adapter(self, name: str) -> AdapterConfig:
        for adapter in self.adapters:
            if adapter.name == name:
                return adapter
        raise ConfigError(f"no adapter named {name!r} in config; known: {', '.join(a.name for a in self.adapters)}")

    # Storage layout: one place that says where each store lives under the root.
    @property
    def documents_dir(self) -> Path:
        return self.storage_root / "documents"

    @property
    def lancedb_dir(self) -> Path:
        return self.storage_root / "lancedb"

    @property
    def lancedb_uri(self) -> str:
        """What lancedb.connect() gets: a local folder or an object-store URI."""
        return self.stores.lancedb_uri or str(self.lancedb_dir)

    @property
    def faiss_dir(self) -> Path:
        return self.stores.faiss_dir or self.storage_root / "faiss"

    @property
    def cache_dir(self) -> Path:
        return self.storage_root / "cache"

    @property
    def embedding_cache_path(self) -> Path:
        """Vectors by model and text hash, shared by every indexing run and partition."""
        return self.cache_dir / "embeddings.sqlite"

    @property
    def index_lock_path(self) -> Path:
        """Held by the one indexing run a storage may have at a time."""
        return self.cache_dir / "index.lock"

    @property
    def base_models_dir(self) -> Path:
        """Base model weights' hashes and local copies, shared by training, chat, export and the service."""
        return self.cache_dir / "base_models"

    @property
    def embed_claims_dir(self) -> Path:
        """Batches the embed range steps of a run claimed (one folder per run; embedding fan-out)."""
        return self.cache_dir / "embed_claims"

    @property
    def parsed_dir(self) -> Path:
        """Documents parse steps staged for their kind's commit (ingest fan-out)."""
        return self.cache_dir / "parsed"

    @property
    def scores_dir(self) -> Path:
        return self.storage_root / "scores"

    @property
    def search_log_path(self) -> Path:
        return self.storage_root / "search_log.sqlite"

    @property
    def datasets_dir(self) -> Path:
        return self.storage_root / "datasets"

    @property
    def adapters_dir(self) -> Path:
        return self.storage_root / "adapters"

    @property
    def inbox_dir(self) -> Path:
        return self.storage_root / "inbox"

    @property
    def reports_dir(self) -> Path:
        return self.storage_root / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.storage_root / "dagster_home"


def load_config(path: str | Path | None = None, *, storage: str | Path | None = None) -> Config:
    """Load and validate the config; raise ConfigError with the key and what is allowed."""
    path = path or os.environ.get(CONFIG_ENV) or None
    if path is None and Path(DEFAULT_CONFIG_NAME).is_file():
        path = DEFAULT_CONFIG_NAME
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte {exc.start}); is it the right file?"
            ) from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(loaded).__name__}")
        raw = loaded or {}
        base_dir = path.resolve().parent
    storage = storage or os.environ.get(STORAGE_ENV) or None
    if storage is not None:
        raw["storage_root"] = str(storage)
        storage_base = Path.cwd()
    else:
        storage_base = base_dir
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, path)) from None
    return _resolve_paths(config, base_dir, storage_base, path)


def _resolve_paths(config: Config, base_dir: Path, storage_base: Path, path: Path | None) -> Config:
    def absolute(p: Path, base: Path) -> Path:
        p = Path(os.path.expanduser(str(p)))
        return p if p.is_absolute() else (base / p).resolve()

    config.storage_root = absolute(config.storage_root, storage_base)
    if config.storage_root.exists() and not config.storage_root.is_dir():
        raise ConfigError(f"storage_root: {config.storage_root} is a file, not a folder")
    config.sources.dialogues = [absolute(p, base_dir) for p in config.sources.dialogues]
    config.sources.articles = [absolute(p, base_dir) for p in config.sources.articles]
    config.sources.lectures = [absolute(p, base_dir) for p in config.sources.lectures]
    if config.stores.faiss_dir is not None:
        config.stores.faiss_dir = absolute(config.stores.faiss_dir, base_dir)
    config.config_path = path.resolve() if path else None
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _format_validation_error(exc: ValidationError, path: Path | None) -> str:
    where = f"config file {path}" if path else "config"
    lines = [f"{where} is invalid:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(error["loc"][:-1])
            lines.append(f"  - unknown key '{key}'; allowed here: {', '.join(allowed)}")
        else:
            lines.append(f"  - '{key}': {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(k for k in model.model_fields if k != "config_path")

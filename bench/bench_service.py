"""Load test of the memory service on loopback: latency, throughput, and no dialogue lost or doubled.

    .venv/bin/python bench/bench_service.py [--seconds 120] [--clients 8] [--documents 2000]
                                      [--search-threads N] [--workdir NEW_DIR]

Builds a generated Russian/English corpus (chat JSONL dialogues and Markdown articles), ingests and
indexes it with the CLI, starts the real service (``memory-pipeline serve``) in a subprocess, and
runs concurrent clients mixing ``POST /search`` and ``POST /dialogues`` for a fixed time; some
dialogue requests re-send an acknowledged exchange to test idempotency. It then checks that every
acknowledged (conversation_id, turn_index) is in the inbox exactly once and, after ingest, in the
documents exactly once, and compares a warm service search with cold ``memory-pipeline search``
processes. Writes bench/results/service.json; exits 1 when the integrity check fails.
Clients and server share the machine's cores, so the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

RESULTS = Path(__file__).resolve().parent / "results"
CLI = str(Path(sys.executable).with_name("memory-pipeline"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
MARKER = re.compile(r"\[ref (bench-[0-9]+-[0-9]+)/([0-9]+)\]")

TOPICS: dict[str, dict[str, list[str]]] = {
    "running": {
        "ru": [
            "Лёгкий бег в разговорном темпе строит аэробную базу",
            "Перед марафоном объём снижают за две недели",
            "Интервалы по километру развивают скорость на пороге",
            "Пульсовые зоны помогают не перегореть на длинной",
        ],
        "en": [
            "Easy runs at conversational pace build the aerobic base",
            "Taper the mileage two weeks before the marathon",
            "Kilometre repeats raise the lactate threshold",
            "Heart rate zones keep the long run honest",
        ],
    },
    "llm": {
        "ru": [
            "Маленькую языковую модель можно дообучить с LoRA на своём ноутбуке",
            "Качество датасета важнее его размера",
            "Перплексия на отложенной выборке показывает забывание",
            "Квантизация уменьшает память модели вчетверо",
        ],
        "en": [
            "A small language model can be fine-tuned with LoRA on a laptop",
            "Dataset quality matters more than its size",
            "Held-out perplexity reveals catastrophic forgetting",
            "Quantization cuts the model's memory fourfold",
        ],
    },
    "cooking": {
        "ru": [
            "Борщ вкуснее на второй день",
            "Тесто для пельменей должно отдохнуть полчаса",
            "Гречку лучше обжарить перед варкой",
            "Квашеная капуста готова через неделю",
        ],
        "en": [
            "Sourdough needs a lively starter and a long cold proof",
            "Salt the pasta water generously",
            "Rest the steak before slicing it",
            "Roast the spices before grinding them",
        ],
    },
    "finance": {
        "ru": [
            "Подушка безопасности — шесть месяцев расходов",
            "Индексный фонд дешевле активного управления",
            "Сложный процент работает на длинном горизонте",
            "Бюджет начинается с учёта трат",
        ],
        "en": [
            "An emergency fund covers six months of expenses",
            "Index funds beat most active managers after fees",
            "Compound interest rewards a long horizon",
            "A budget starts with tracking what you spend",
        ],
    },
    "garden": {
        "ru": [
            "Томаты любят солнце и редкий обильный полив",
            "Мульча сохраняет влагу в жару",
            "Рассаду перцев сеют в феврале",
            "Компост созревает за год",
        ],
        "en": [
            "Tomatoes want full sun and deep, infrequent watering",
            "Mulch keeps the soil moist in a heat wave",
            "Start pepper seedlings indoors in February",
            "A compost heap matures in about a year",
        ],
    },
    "chess": {
        "ru": [
            "В дебюте важно развить фигуры и рокироваться",
            "Ладейные эндшпили встречаются чаще всего",
            "Тактика решает партии на любительском уровне",
            "Разбор своих партий полезнее чтения теории",
        ],
        "en": [
            "Develop your pieces and castle early in the opening",
            "Rook endgames are the most common endgames",
            "Tactics decide most amateur games",
            "Reviewing your own games beats reading theory",
        ],
    },
}
QUERIES: dict[str, dict[str, list[str]]] = {
    "running": {
        "ru": ["как тренироваться к марафону", "какой темп для лёгкого бега"],
        "en": ["how to train for a marathon", "easy run pace"],
    },
    "llm": {
        "ru": ["дообучение модели на своём железе", "что такое перплексия"],
        "en": ["fine-tune a small model at home", "catastrophic forgetting"],
    },
    "cooking": {"ru": ["рецепт борща", "как варить гречку"], "en": ["sourdough bread tips", "how to cook a steak"]},
    "finance": {
        "ru": ["куда вложить деньги", "сколько денег держать в запасе"],
        "en": ["index funds vs active", "emergency fund size"],
    },
    "garden": {"ru": ["когда сеять перцы", "как поливать томаты"], "en": ["watering tomatoes", "how to make compost"]},
    "chess": {
        "ru": ["как играть дебют в шахматах", "ладейный эндшпиль"],
        "en": ["chess opening principles", "rook endgames"],
    },
}


def _language(rng: random.Random) -> str:
    return "ru" if rng.random() < 0.7 else "en"


def _query(rng: random.Random) -> str:
    return rng.choice(QUERIES[rng.choice(list(QUERIES))][_language(rng)])


def _text(rng: random.Random, topic: str, language: str, sentences: int) -> str:
    pool = TOPICS[topic][language]
    other = TOPICS[rng.choice(list(TOPICS))][language]
    picked = [rng.choice(pool) for _ in range(sentences - 1)] + [rng.choice(other)]
    rng.shuffle(picked)
    note = "Заметка" if language == "ru" else "Note"
    return ". ".join(picked) + f". {note} {rng.randint(1, 10**6)}."


def make_corpus(folder: Path, documents: int, seed: int = 7) -> dict[str, int]:
    """Half dialogues (chat JSONL, the inbox's own format), half Markdown articles; 70% Russian."""
    rng = random.Random(seed)
    dialogues, articles = folder / "dialogues", folder / "articles"
    dialogues.mkdir(parents=True, exist_ok=True)
    articles.mkdir(parents=True, exist_ok=True)
    counts = Counter()
    for i in range(documents):
        topic = rng.choice(list(TOPICS))
        language = _language(rng)
        if i % 2 == 0:
            rows = []
            for turn in range(2 * rng.randint(1, 3)):
                role = "user" if turn % 2 == 0 else "assistant"
                text = (
                    rng.choice(QUERIES[topic][language]) + "?"
                    if role == "user"
                    else _text(rng, topic, language, rng.randint(2, 4))
                )
                rows.append(
                    {
                        "conversation_id": f"corpus-{i}",
                        "turn_index": turn,
                        "role": role,
                        "content": text,
                        "timestamp": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00+00:00",
                        "title": f"{topic} {i}",
                    }
                )
            (dialogues / f"corpus-{i}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
            )
            counts["dialogues"] += 1
        else:
            body = "\n\n".join(
                f"## {topic} {part}\n\n{_text(rng, topic, language, rng.randint(3, 6))}"
                for part in range(rng.randint(1, 3))
            )
            (articles / f"article-{i}.md").write_text(f"# {topic.title()} {i}\n\n{body}\n", encoding="utf-8")
            counts["articles"] += 1
        counts[language] += 1
    return dict(counts)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(
    config_path: Path, *args: str, timeout: float, env: dict[str, str] = ENV
) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(
        [CLI, "-c", str(config_path), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"memory-pipeline {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, done


def ingest(config_path: Path) -> dict:
    seconds, done = _cli(config_path, "ingest", "--json", timeout=3600)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    index = report.get("index", {})
    return {
        "seconds": round(seconds, 1),
        "documents": sum(r["documents_total"] for k, r in report.items() if k != "index"),
        "chunks": index.get("chunks_total"),
        "embedded": index.get("embedded"),
    }


@dataclass
class Endpoint:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def succeeded(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)

    def failed(self, reason: str) -> None:
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(reason[:300])

    def summary(self, seconds: float) -> dict:
        ok = sorted(self.latencies)
        cuts = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) > 1 else ok * 99
        return {
            "requests": len(ok) + self.errors,
            "ok": len(ok),
            "errors": self.errors,
            "requests_per_s": round(len(ok) / seconds, 1),
            **(
                {
                    "p50_ms": round(cuts[49] * 1000, 1),
                    "p95_ms": round(cuts[94] * 1000, 1),
                    "p99_ms": round(cuts[98] * 1000, 1),
                    "max_ms": round(ok[-1] * 1000, 1),
                }
                if ok
                else {}
            ),
            "error_samples": self.error_samples,
        }


@dataclass
class Ledger:
    """What the clients sent and what the service acknowledged, shared by all client threads."""

    acknowledged: set[tuple[str, int]] = field(default_factory=set)
    unacknowledged: set[tuple[str, int]] = field(default_factory=set)
    resend_pool: list[dict] = field(default_factory=list)
    resends: int = 0
    resends_recorded_again: int = 0
    first_sends_not_recorded: int = 0
    search: Endpoint = field(default_factory=Endpoint)
    dialogues: Endpoint = field(default_factory=Endpoint)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _exchange(rng: random.Random, conversation_id: str, start: int) -> dict:
    language = _language(rng)
    topic = rng.choice(list(TOPICS))
    return {
        "conversation_id": conversation_id,
        "title": f"bench {conversation_id}",
        "model": "bench-model",
        "start_index": start,
        "messages": [
            {"role": "user", "content": f"{rng.choice(QUERIES[topic][language])}? [ref {conversation_id}/{start}]"},
            {"role": "assistant", "content": f"{_text(rng, topic, language, 2)} [ref {conversation_id}/{start + 1}]"},
        ],
    }


def run_client(
    number: int,
    base: str,
    token: str,
    deadline: float,
    max_requests: int,
    ledger: Ledger,
    search_share: float,
    resend_share: float,
) -> None:
    rng = random.Random(1000 + number)
    conversations = 0
    conversation_id, next_index, exchanges_left = "", 0, 0
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0, trust_env=False
    ) as http:
        for _ in range(max_requests):
            if time.perf_counter() >= deadline:
                return
            if rng.random() < search_share:
                body = {"query": _query(rng), "k": rng.choice((5, 10))}
                _call(
                    http, "/search", body, ledger.search, lambda r: isinstance(r.get("hits"), list) and bool(r["hits"])
                )
                continue
            with ledger.lock:
                resend = ledger.resend_pool and rng.random() < resend_share
                payload = rng.choice(ledger.resend_pool) if resend else None
            if payload is not None:
                answer = _call(http, "/dialogues", payload, ledger.dialogues, lambda r: "recorded" in r)
                with ledger.lock:
                    ledger.resends += 1
                    if answer is not None and answer["recorded"] != 0:
                        ledger.resends_recorded_again += 1
                continue
            if exchanges_left == 0:
                conversations += 1
                conversation_id, next_index, exchanges_left = f"bench-{number}-{conversations}", 0, rng.randint(1, 4)
            payload = _exchange(rng, conversation_id, next_index)
            keys = {(conversation_id, next_index), (conversation_id, next_index + 1)}
            next_index += 2
            exchanges_left -= 1
            answer = _call(http, "/dialogues", payload, ledger.dialogues, lambda r: "recorded" in r)
            with ledger.lock:
                if answer is None:
                    ledger.unacknowledged |= keys
                    continue
                ledger.acknowledged |= keys
                ledger.resend_pool.append(payload)
                if answer["recorded"] != 2:
                    ledger.first_sends_not_recorded += 1


def _call(http: httpx.Client, path: str, body: dict, endpoint: Endpoint, valid) -> dict | None:
    started = time.perf_counter()
    try:
        response = http.post(path, json=body)
        elapsed = time.perf_counter() - started
        answer = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        endpoint.failed(f"{type(exc).__name__}: {exc}")
        return None
    if answer is None or not valid(answer):
        endpoint.failed(f"HTTP {response.status_code}: {response.text[:200]}")
        return None
    endpoint.succeeded(elapsed)
    return answer


def run_load(
    base: str, token: str, *, seconds: float, clients: int, max_requests: int, search_share: float, resend_share: float
) -> tuple[Ledger, float]:
    ledger = Ledger()
    started = time.perf_counter()
    deadline = started + seconds
    threads = [
        threading.Thread(
            target=run_client,
            args=(n, base, token, deadline, max_requests // clients, ledger, search_share, resend_share),
            daemon=True,
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    return ledger, time.perf_counter() - started


def check_inbox(inbox: Path, ledger: Ledger) -> dict:
    """Every acknowledged turn exactly once; nothing written that no client sent."""
    lines: Counter = Counter()
    for path in inbox.glob("bench-*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            lines[(row["conversation_id"], row["turn_index"])] += 1
    sent = ledger.acknowledged | ledger.unacknowledged
    return {
        "acknowledged_turns": len(ledger.acknowledged),
        "unacknowledged_turns": len(ledger.unacknowledged),
        "inbox_lines": sum(lines.values()),
        "lost": sorted(f"{c}/{t}" for c, t in ledger.acknowledged - set(lines))[:20],
        "duplicated": sorted(f"{c}/{t}" for (c, t), n in lines.items() if n > 1)[:20],
        "never_sent": sorted(f"{c}/{t}" for c, t in set(lines) - sent)[:20],
        "resends": ledger.resends,
        "resends_recorded_again": ledger.resends_recorded_again,
        "first_sends_not_recorded": ledger.first_sends_not_recorded,
    }


def check_documents(config_path: Path, ledger: Ledger) -> dict:
    """After ingest, each acknowledged turn's marker is in the dialogue documents exactly once."""
    from memory_pipeline.config import load_config
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.records import Kind

    config = load_config(config_path)
    found: Counter = Counter()
    for doc in DocumentStore(config.documents_dir).iter_documents(Kind.DIALOGUE):
        for turn in doc.turns:
            for conversation_id, index in MARKER.findall(turn.text):
                found[(conversation_id, int(index))] += 1
    return {
        "turns_in_documents": sum(found.values()),
        "missing": sorted(f"{c}/{t}" for c, t in ledger.acknowledged - set(found))[:20],
        "duplicated": sorted(f"{c}/{t}" for (c, t), n in found.items() if n > 1)[:20],
    }


def compare_warm_cold(base: str, token: str, config_path: Path, runs: int, env: dict[str, str]) -> dict:
    queries = [query for by_language in QUERIES.values() for pair in by_language.values() for query in pair]
    warm = []
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0, trust_env=False
    ) as http:
        for query in queries * 2:
            started = time.perf_counter()
            http.post("/search", json={"query": query, "k": 10}).raise_for_status()
            warm.append(time.perf_counter() - started)
    via_service = [
        _cli(config_path, "search", queries[n % len(queries)], "-k", "10", timeout=300, env=env) for n in range(runs)
    ]
    in_process = [
        _cli(config_path, "search", queries[n % len(queries)], "-k", "10", "--no-service", timeout=600, env=env)
        for n in range(runs)
    ]
    return {
        "warm_service_http_ms": {
            "p50": round(statistics.median(warm) * 1000, 1),
            "mean": round(statistics.fmean(warm) * 1000, 1),
            "requests": len(warm),
        },
        "cli_via_service_s": [round(s, 2) for s, _ in via_service],
        "cli_via_service_answered_by_service": all("via service" in done.stdout for _, done in via_service),
        "cli_in_process_s": [round(s, 2) for s, _ in in_process],
    }


def start_service(config_path: Path, port: int, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [CLI, "-c", str(config_path), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2.0, trust_env=False).json().get("search_loaded"):
                return process, base
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError("service did not become ready in 300 s")


def stop_service(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120, help="duration of the load phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument(
        "--documents", type=int, default=2000, help="generated corpus size (half dialogues, half articles)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="cap on requests in the load phase, over all clients"
    )
    parser.add_argument("--search-share", type=float, default=0.7)
    parser.add_argument(
        "--resend-share",
        type=float,
        default=0.15,
        help="share of dialogue requests that re-send an acknowledged exchange",
    )
    parser.add_argument("--cold-runs", type=int, default=3, help="cold CLI searches to time")
    parser.add_argument(
        "--search-threads",
        type=int,
        default=None,
        help="OMP/MKL threads for the service and CLI searches (default: torch's own, one per core)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the corpus and storage here (default: a temp dir, removed)"
    )
    args = parser.parse_args()

    if args.workdir and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(
            f"--workdir {args.workdir} is not empty: an earlier run's inbox would spoil the lost/duplicated check"
        )
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_service_"))
    work.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    port = _free_port()
    config_path = work / "memory_pipeline.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "storage_root": str(work / "storage"),
                "sources": {
                    "dialogues": [str(work / "corpus" / "dialogues")],
                    "articles": [str(work / "corpus" / "articles")],
                },
                "service": {"host": "127.0.0.1", "port": port, "token": token},
            }
        ),
        encoding="utf-8",
    )
    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {k: v for k, v in vars(args).items() if k != "workdir"},
    }
    threads = (
        {"OMP_NUM_THREADS": str(args.search_threads), "MKL_NUM_THREADS": str(args.search_threads)}
        if args.search_threads
        else {}
    )
    search_env = {**ENV, **threads}
    process = None
    try:
        results["corpus"] = make_corpus(work / "corpus", args.documents)
        results["initial_ingest_and_index"] = ingest(config_path)
        print(json.dumps(results["corpus"] | results["initial_ingest_and_index"]), flush=True)
        started = time.perf_counter()
        process, base = start_service(config_path, port, work / "service.log", search_env)
        results["service_start_s"] = round(time.perf_counter() - started, 1)

        ledger, elapsed = run_load(
            base,
            token,
            seconds=args.seconds,
            clients=args.clients,
            max_requests=args.max_requests,
            search_share=args.search_share,
            resend_share=args.resend_share,
        )
        results["load"] = {
            "seconds": round(elapsed, 1),
            "search": ledger.search.summary(elapsed),
            "dialogues": ledger.dialogues.summary(elapsed),
        }
        print(json.dumps(results["load"], indent=1), flush=True)
        results["inbox"] = check_inbox(work / "storage" / "inbox", ledger)
        results["ingest_after_load"] = ingest(config_path)
        results["documents"] = check_documents(config_path, ledger)
        results["search_latency"] = compare_warm_cold(base, token, config_path, args.cold_runs, search_env)
    finally:
        if process is not None:
            stop_service(process)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    inbox, documents = results["inbox"], results["documents"]
    results["integrity_ok"] = not (
        inbox["lost"]
        or inbox["duplicated"]
        or inbox["never_sent"]
        or inbox["resends_recorded_again"]
        or inbox["first_sends_not_recorded"]
        or documents["missing"]
        or documents["duplicated"]
    )
    print(json.dumps({k: results[k] for k in ("inbox", "documents", "search_latency", "integrity_ok")}, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS / 'service.json'}")
    if not results["integrity_ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

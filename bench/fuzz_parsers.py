"""Fuzz every source parser with generated files for a fixed time budget; count inputs and failures.

    .venv/bin/python bench/fuzz_parsers.py [--seconds 600] [--workdir DIR] [--seed 0]

Inputs come from hypothesis strategies shaped like each format (JSON built from the exports'
own keys, Markdown/HTML/subtitle text built from each format's markers, PDF-like bytes), and
from raw and mutated bytes. Each input is written to a file with the format's extension and
parsed through ``parse_file`` with the kind its source folder would give. The contract: a parser
yields documents or raises ParseError naming the file. Anything else counts as a failure:
``crashes`` are exceptions ingest would still survive (it reports ValueError, OSError, ... per
file), ``fatal`` ones would stop an ingest run; an input taking over ``--slow-seconds`` counts
as ``slow``. Writes bench/results/fuzz_parsers.json (figures per parser, the first failures).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory_pipeline.errors import ParseError  # noqa: E402
from memory_pipeline.records import Kind  # noqa: E402
from memory_pipeline.sources import parse_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# What ingest catches per file besides ParseError (memory_pipeline.ingest.pipeline._IngestRun.ingest_unit).
SURVIVABLE = (OSError, ValueError, KeyError, TypeError, UnicodeError, RecursionError, ArithmeticError)

JSON_KEYS = [
    "mapping",
    "message",
    "author",
    "role",
    "content",
    "parts",
    "content_type",
    "children",
    "parent",
    "current_node",
    "chat_messages",
    "sender",
    "text",
    "created_at",
    "updated_at",
    "create_time",
    "update_time",
    "title",
    "name",
    "id",
    "uuid",
    "conversation_id",
    "turn_index",
    "messages",
    "model",
    "metadata",
    "type",
    "timestamp",
    "default_model_slug",
]
ROLES = ["user", "assistant", "human", "system", "tool", "model", "", "USER"]
TEXT_MARKERS = [
    "---\n",
    "title: ",
    "conversation_id: ",
    "created: 2024-01-02\n",
    ">[!nexus_user]",
    ">[!nexus_agent]",
    "### User\n",
    "### Assistant\n",
    "# ",
    "## ",
    "```\n",
    "[[link]]",
    "- ",
    "1. ",
    "> ",
    "\n\n",
    "[00:01]",
    "[1:02:03] ",
    "00:00:01,000 --> 00:00:02,000\n",
    "WEBVTT\n\n",
    "00:01.000 --> 00:02.000\n",
    "<v Speaker>",
    "Speaker: ",
    "<div>",
    "</div>",
    "<h1>",
    "</h1>",
    "<p>",
    "<li>",
    "<article>",
    "<script>",
    "<pre>",
    "<table><tr><td>",
    "<br>",
    "&amp;",
    "Ð\u009fÑ\u0080Ð¸",
    "привет",
    "\u200b",
    "\x00",
    "\r\n",
]
FORMATS = {  # name: (file name, kind of its source folder)
    "chatgpt_json": ("conversations.json", Kind.DIALOGUE),
    "claude_json": ("claude.json", Kind.DIALOGUE),
    "chat_jsonl": ("chat.jsonl", Kind.DIALOGUE),
    "nexus_md": ("note.md", Kind.DIALOGUE),
    "markdown": ("article.md", Kind.ARTICLE),
    "text": ("article.txt", Kind.ARTICLE),
    "html": ("page.html", Kind.ARTICLE),
    "pdf": ("paper.pdf", Kind.ARTICLE),
    "srt": ("talk.srt", Kind.LECTURE),
    "vtt": ("talk.vtt", Kind.LECTURE),
    "transcript": ("talk.txt", Kind.LECTURE),
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(ROLES),
    st.sampled_from(["text", "multimodal_text", "tool_use"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(JSON_KEYS), st.text(max_size=8)), children, max_size=6),
    ),
    max_leaves=40,
)


def _deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def _export_bytes(value, shape: str, ensure_ascii: bool) -> bytes:
    if shape == "chatgpt":
        value = [{"title": "t", "mapping": value, "current_node": "a"}]
    elif shape == "claude":
        value = [{"uuid": "u", "name": "n", "chat_messages": value}]
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def _mutate(data: bytes, cut: int, insert: bytes) -> bytes:
    cut = cut % (len(data) + 1)
    return data[:cut] + insert + data[cut:]


def _chatgpt_conversation(title: str, question: str, answer: str) -> dict:
    def node(node_id, role, text, parent, children):
        message = {"author": {"role": role}, "content": {"content_type": "text", "parts": [text]}}
        return {"id": node_id, "message": message, "parent": parent, "children": children}

    mapping = {"a": node("a", "user", question, None, ["b"]), "b": node("b", "assistant", answer, "a", [])}
    return {"title": title, "mapping": mapping, "current_node": "b"}


def _claude_conversation(title: str, question: str, answer: str) -> dict:
    return {
        "uuid": "u",
        "name": title,
        "chat_messages": [{"sender": "human", "text": question}, {"sender": "assistant", "text": answer}],
    }


valid_exports = st.builds(
    lambda convert, n, ensure_ascii: json.dumps([convert(*texts) for texts in n], ensure_ascii=ensure_ascii).encode(
        "utf-8", "surrogatepass"
    ),
    st.sampled_from([_chatgpt_conversation, _claude_conversation]),
    st.lists(st.tuples(st.text(max_size=20), st.text(max_size=60), st.text(max_size=60)), min_size=1, max_size=4),
    st.booleans(),
)
json_files = st.one_of(
    valid_exports,
    st.builds(_export_bytes, json_values, st.sampled_from(["chatgpt", "claude", "plain"]), st.booleans()),
    st.builds(
        _mutate,
        st.builds(_export_bytes, json_values, st.sampled_from(["chatgpt", "claude"]), st.booleans()),
        st.integers(0, 10**6),
        st.binary(max_size=8),
    ),
    st.builds(
        lambda d, k: ('{"mapping": ' if k else '{"chat_messages": ').encode() + _deep(d).encode() + b"}",
        st.integers(1, 20_000),
        st.booleans(),
    ),
    st.binary(max_size=300).map(lambda b: b'[{"mapping": ' + b),
)
jsonl_files = st.one_of(
    st.lists(json_values, max_size=8).map(
        lambda rows: "\n".join(json.dumps(r) for r in rows).encode("utf-8", "surrogatepass")
    ),
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(ROLES), "content": json_values},
            optional={"conversation_id": scalars, "turn_index": scalars, "title": scalars},
        ),
        max_size=8,
    ).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode("utf-8", "surrogatepass")),
    st.integers(1, 20_000).map(lambda d: b'{"role": "user", "content": "x"}\n' + _deep(d).encode()),
    st.binary(max_size=300),
)
text_pieces = st.lists(st.one_of(st.sampled_from(TEXT_MARKERS), st.text(max_size=30)), max_size=40).map("".join)
text_files = st.one_of(
    st.builds(
        lambda t, enc: t.encode(enc, "replace"),
        text_pieces,
        st.sampled_from(["utf-8", "cp1251", "utf-16", "koi8-r", "latin-1"]),
    ),
    st.integers(1, 30_000).map(lambda d: ("<html><body>" + "<div>" * d + "x" + "</div>" * d).encode()),
    st.binary(max_size=300),
)
pdf_files = st.one_of(
    st.binary(max_size=400).map(lambda b: b"%PDF-1.4\n" + b),
    st.builds(
        lambda body, tail: (
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            + body
            + b"\ntrailer\n<< /Root 1 0 R >>\n%%EOF"
            + tail
        ),
        st.binary(max_size=200),
        st.binary(max_size=20),
    ),
    st.binary(max_size=200),
)
STRATEGIES = {
    "chatgpt_json": json_files,
    "claude_json": json_files,
    "chat_jsonl": jsonl_files,
    "pdf": pdf_files,
    **{name: text_files for name in ("nexus_md", "markdown", "text", "html", "srt", "vtt", "transcript")},
}


MUTANTS = 4  # byte-level variants per generated input: cheap next to generating one


def _byte_mutant(data: bytes, rng) -> bytes:
    """A few random edits: flip, delete, duplicate a slice, or cut the end off (a crash mid-write)."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randint(0, len(data))
        edit = rng.randrange(4)
        if edit == 0 and data:
            data[min(where, len(data) - 1)] = rng.randrange(256)
        elif edit == 1:
            del data[where : where + rng.randint(1, 16)]
        elif edit == 2:
            data[where:where] = data[where : where + rng.randint(1, 64)] * rng.randint(1, 8)
        else:
            del data[where:]
    return bytes(data)


def fuzz_format(name: str, folder: Path, seconds: float, slow_seconds: float) -> dict:
    file_name, kind = FORMATS[name]
    path = folder / file_name
    figures = {"inputs": 0, "documents": 0, "parse_errors": 0, "crashes": 0, "fatal": 0, "slow": 0, "max_seconds": 0.0}
    examples: list[dict] = []
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(STRATEGIES[name], st.integers(0, 2**32))
    def run(generated: bytes, seed: int) -> None:
        if time.monotonic() > deadline:  # the rest of the round: generated, not run
            return
        rng = random.Random(seed)
        for data in (generated, *(_byte_mutant(generated, rng) for _ in range(MUTANTS))):
            try_one(data)

    def try_one(data: bytes) -> None:
        path.write_bytes(data)
        figures["inputs"] += 1
        started = time.perf_counter()
        try:
            figures["documents"] += sum(1 for _ in parse_file(path, kind))
        except ParseError:
            figures["parse_errors"] += 1
        except Exception as exc:  # noqa: BLE001 (counting what escapes the contract is the point)
            bucket = "crashes" if isinstance(exc, SURVIVABLE) else "fatal"
            figures[bucket] += 1
            if len(examples) < 5:
                examples.append(
                    {
                        "kind": bucket,
                        "error": f"{type(exc).__name__}: {exc}"[:300],
                        "input": repr(data[:200]),
                        "where": traceback.format_exc().strip().splitlines()[-3][:200],
                    }
                )
        elapsed = time.perf_counter() - started
        figures["max_seconds"] = max(figures["max_seconds"], round(elapsed, 3))
        if elapsed > slow_seconds:
            figures["slow"] += 1
            if len(examples) < 5:
                examples.append({"kind": "slow", "seconds": round(elapsed, 2), "input": repr(data[:200])})

    started = time.monotonic()
    while time.monotonic() < deadline:  # rounds of 500 examples, so the budget ends at most one round late
        run()
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["inputs_per_second"] = round(figures["inputs"] / max(figures["seconds"], 1e-9), 1)
    return {**figures, "first_failures": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="total budget, split evenly over the parsers")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="an input taking longer counts as slow")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the input files are written (default: a temp folder)"
    )
    parser.add_argument("--only", nargs="*", default=list(FORMATS), choices=list(FORMATS))
    args = parser.parse_args()

    import logging

    logging.disable(logging.WARNING)  # parsers warn per skipped line/conversation; millions of lines otherwise
    per_format = args.seconds / len(args.only)
    results = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name in args.only:
            results[name] = fuzz_format(name, Path(tmp), per_format, args.slow_seconds)
            r = results[name]
            print(
                f"{name:13s} {r['inputs']:7d} inputs  {r['documents']:6d} docs  {r['parse_errors']:6d} ParseError  "
                f"{r['crashes']} crashes  {r['fatal']} fatal  {r['slow']} slow  max {r['max_seconds']}s",
                flush=True,
            )
    totals = {
        key: sum(r[key] for r in results.values())
        for key in ("inputs", "documents", "parse_errors", "crashes", "fatal", "slow")
    }
    payload = {
        "benchmark": "fuzz_parsers",
        "budget_seconds": args.seconds,
        "totals": totals,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "per_parser": results,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz_parsers.json").write_text(
        json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(json.dumps(totals))


if __name__ == "__main__":
    main()

"""The proxy as a drop-in OpenAI endpoint.

Driven by the real OpenAI Python SDK through a served app and a stub upstream.
"""

import logging

import openai
import pytest
from test_adapters import base_dir  # noqa: F401  (a fixture: the tiny random Llama with a chat tokenizer)
from test_service import _upstream_app, running

from memory_pipeline.config import AdapterConfig, Config, GuardConfig
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.service.app import create_app
from memory_pipeline.service.proxy import MEMORY_HEADER

pytestmark = pytest.mark.slow
TOKEN = "sdk-token"
WORLDVIEW = "Answer as the user thinks: plain words, own experience first."
DISCLAIMER = "These are my own training views, not medical advice."
SPORT = AdapterConfig(
    name="sport",
    description="Sport and training: running, marathons, workouts, pacing, recovery.",
    keywords=["marathon", "running", "pace"],
    guard=GuardConfig(disclaimer=DISCLAIMER, decline_topics=["doping"]),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index

    root = tmp_path_factory.mktemp("sdk")
    notes = root / "articles"
    notes.mkdir()
    (notes / "marathon.md").write_text(
        "---\ndate: 2024-03-15\n---\n# Marathon pacing\n\nRun the first half of a marathon slower than goal pace; "
        "easy running at conversational pace builds the aerobic base.\n\n"
        "# Recovery\n\nAfter a long run, sleep and an easy day matter more than any supplement.\n",
        encoding="utf-8",
    )
    seen: list[dict] = []
    with running(_upstream_app(seen)) as upstream:
        config = Config(
            storage_root=root / "storage", sources={"articles": [notes]}, adapters=[Config().adapters[0], SPORT]
        )
        config.service.token = TOKEN
        config.service.upstream_url = f"{upstream}/v1"
        config.service.model_adapters = {"my-model": "core+sport"}
        config.service.system_prompt = WORLDVIEW
        ingest_all(config)
        embedder = load_embedder(config.embedding)
        sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
        from memory_pipeline.index.search import Searcher

        with running(create_app(config, searcher=Searcher(config, embedder=embedder))) as base:
            client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
            yield client, seen, base


def _system(request: dict) -> str:
    return request["messages"][0]["content"] if request["messages"][0]["role"] == "system" else ""


def test_models_list_names_the_configured_models_and_auto(served):
    client, _, _ = served
    assert [m.id for m in client.models.list()] == ["my-model", "auto"]


def test_auto_routes_by_content_guards_and_injects_dated_sourced_memories(served, caplog):
    client, seen, _ = served
    with caplog.at_level(logging.INFO, logger="memory_pipeline.service.proxy"):
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How should I pace my first marathon?"},
            ],
        )
    answer = raw.parse()
    assert answer.choices[0].message.content.startswith("Темп")
    assert raw.headers["x-memory-adapters"] == "core+sport" and "adapters core+sport" in caplog.text
    request = seen[-1]
    system = _system(request)
    assert request["model"] == "core+sport"
    assert system.startswith(WORLDVIEW) and DISCLAIMER in system and "doping" in system
    assert system.index("Be brief.") < system.index(MEMORY_HEADER)
    memories = system.split(MEMORY_HEADER, 1)[1].strip().splitlines()
    assert memories and all("2024-03-15" in line and "marathon.md" in line for line in memories)
    assert len(memories) == len(set(memories))


def test_an_unrelated_question_gets_no_memories_and_a_plain_model_no_guard(served):
    client, seen, _ = served
    client.chat.completions.create(
        model="plain-model", messages=[{"role": "user", "content": "What is the capital of Portugal?"}]
    )
    system = _system(seen[-1])
    assert seen[-1]["model"] == "plain-model"
    assert system == WORLDVIEW  # the worldview always; no guard (no adapter active), no memory (none relevant)


def test_since_until_steer_recall_and_never_reach_the_model_server(served):
    client, seen, _ = served
    question = [{"role": "user", "content": "How should I pace my first marathon?"}]
    client.chat.completions.create(
        model="my-model", messages=question, extra_body={"since": "2024-03-01", "until": "2024-03-31"}
    )
    assert MEMORY_HEADER in _system(seen[-1]) and not {"since", "until"} & set(seen[-1])
    client.chat.completions.create(model="my-model", messages=question, extra_body={"since": "2025-01-01"})
    assert MEMORY_HEADER not in _system(seen[-1])  # the March 2024 notes are outside the span
    with pytest.raises(openai.BadRequestError) as unreadable:
        client.chat.completions.create(model="my-model", messages=question, extra_body={"since": "sometime soon"})
    assert "since" in unreadable.value.message


def test_streamed_chat_relays_the_answer_with_the_adapters_header(served):
    client, seen, _ = served
    with client.chat.completions.with_streaming_response.create(
        model="my-model", stream=True, messages=[{"role": "user", "content": "Easy running pace for the aerobic base?"}]
    ) as response:
        assert response.headers["x-memory-adapters"] == "core+sport"
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text == "Темп лёгкого бега — разговорный."
    assert seen[-1]["model"] == "core+sport" and DISCLAIMER in _system(seen[-1])


def test_errors_are_in_openai_shape_and_the_sdk_shows_their_message(served):
    client, _, base = served
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        client.chat.completions.create(model="auto", messages=[])
    assert "messages" in invalid.value.message and invalid.value.body["type"] == "invalid_request_error"
    assert invalid.value.body["param"] == "messages"
    with pytest.raises(openai.UnprocessableEntityError) as bad_role:
        client.chat.completions.create(model="auto", messages=[{"role": "wizard", "content": "hi"}])
    assert "role" in bad_role.value.message
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
    assert unauthorized.value.body["type"] == "authentication_error" and "token" in unauthorized.value.message
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="overloaded", messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body["message"] == "rate limited" and "rate limited" in limited.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="auto", input="x")
    assert missing.value.body["type"] == "not_found_error"


def test_serve_local_answers_with_the_base_model_in_process(tmp_path, base_dir):  # noqa: F811  (the imported fixture)
    from memory_pipeline.service.local_model import create_local_app

    config = Config(storage_root=tmp_path / "storage")
    config.training.base_model = str(
        base_dir
    )  # the tiny random Llama of the adapter tests: the path, not the weights, is under test
    config.service.memory_k = 0
    with running(create_app(config, local_model=create_local_app(config))) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        question = [{"role": "user", "content": "Say hello."}]
        raw = client.chat.completions.with_raw_response.create(model="auto", max_tokens=8, messages=question)
        assert (
            raw.headers["x-memory-adapters"] == "core"
        )  # asked for; no version of core trained yet, so the base answers
        answer = raw.parse().choices[0].message.content
        streamed = client.chat.completions.create(model="auto", max_tokens=8, stream=True, messages=question)
        assert (
            "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answer
        )  # greedy: the same answer

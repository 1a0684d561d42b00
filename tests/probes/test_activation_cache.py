"""The activation cache: read once from a real (tiny) model, resumable, bounded, and an
evidence pass over it equal, byte for byte, to the same pass from the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from probes.activation_cache import (
    ActivationCacheError,
    build_activation_cache,
    open_activation_cache,
    plan_cache,
    reader_source,
    round_to,
)
from probes.evidence.build import build_evidence
from probes.evidence.config import EvidenceConfig
from probes.evidence.sources import CachedChunkReader, SAEChunkReader, read_runs
from probes.reader import ActivationReader
from probes.token_cache import token_cache
from probes.tokenization import TokenBatch
from tests.probes.evidence.test_build import make_texts, topk_sae

HOOK = "layers.1"
PER_CHUNK = 16
CONFIG = EvidenceConfig(
    context_width=8, top_k=5, n_quantiles=3, explain_sample=7, score_sample=9, pool_size=40
)


def _reader(subject: Any) -> ActivationReader:
    return ActivationReader(subject, [HOOK], context_length=24, window_overlap=4, batch_size=5)


def _cache(tmp_path: Path, subject: Any, texts: list[str], **kw: Any) -> Any:
    reader = _reader(subject)
    tokens = token_cache(tmp_path / "tokens", texts, subject.tokenizer)
    source = reader_source(reader, "tiny", "float32")
    plan = plan_cache(tmp_path / "acts", reader, tokens, source, texts_per_chunk=PER_CHUNK, **kw)
    return plan, reader, tokens


def test_cache_holds_the_rounded_activations_in_corpus_order(
    tiny_llama: Any, tmp_path: Path
) -> None:
    texts = make_texts(40)
    plan, reader, tokens = _cache(tmp_path, tiny_llama, texts)
    assert not plan.done and plan.n_tokens == tokens.n_tokens
    seen: list[int] = []
    cache = build_activation_cache(plan, reader, tokens, on_tokens=seen.append)
    assert sum(seen) == tokens.n_tokens
    for i in (0, 17, 39):  # per text: what the reader gives for it alone
        (alone,) = reader.read([texts[i]])
        begin, end = int(tokens.text_offsets[i]), int(tokens.text_offsets[i + 1])
        torch.testing.assert_close(
            cache.tokens(begin, end), round_to(alone.acts_TD[HOOK], "float16"), atol=2e-3, rtol=1e-3
        )
    again = plan_cache(tmp_path / "acts", reader, tokens, plan.source, texts_per_chunk=PER_CHUNK)
    assert again.done and again.folder == plan.folder
    with pytest.raises(ActivationCacheError, match="outside"):
        cache.tokens(0, cache.n_tokens + 1)


def test_interrupted_build_resumes_to_the_same_bytes(tiny_llama: Any, tmp_path: Path) -> None:
    texts = make_texts(50)
    plan, reader, tokens = _cache(tmp_path / "whole", tiny_llama, texts)
    whole = build_activation_cache(plan, reader, tokens)

    plan, reader, tokens = _cache(tmp_path / "cut", tiny_llama, texts)
    calls = []

    def stop_after_two(n: int) -> None:
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_activation_cache(plan, reader, tokens, on_tokens=stop_after_two)
    assert open_activation_cache(plan.folder) is None  # unfinished: not served
    resumed_calls: list[int] = []
    resumed = build_activation_cache(plan, reader, tokens, on_tokens=resumed_calls.append)
    assert len(resumed_calls) == 1 + 2  # the two finished chunks at once, then the last two
    assert sum(resumed_calls) == tokens.n_tokens
    assert torch.equal(resumed.acts.view(torch.int16), whole.acts.view(torch.int16))


def test_size_bound_keeps_the_first_texts(tiny_llama: Any, tmp_path: Path) -> None:
    texts = make_texts(30)
    d_model = tiny_llama.d_model
    tokens = token_cache(tmp_path / "t", texts, tiny_llama.tokenizer)
    bound = 2 * d_model * int(tokens.text_offsets[10]) + 2 * d_model  # ten texts and a bit
    plan, reader, tokens = _cache(tmp_path, tiny_llama, texts, max_bytes=bound)
    assert plan.n_texts == 10 and plan.bytes <= bound
    cache = build_activation_cache(plan, reader, tokens)
    assert cache.n_tokens == int(tokens.text_offsets[10])
    assert (plan.folder / "acts.bin").stat().st_size == plan.bytes
    tiny = plan_cache(tmp_path / "other", reader, tokens, plan.source, max_bytes=1)
    with pytest.raises(ActivationCacheError, match="raise it"):
        build_activation_cache(tiny, reader, tokens)
    sae = topk_sae(d_model)
    with pytest.raises(ValueError, match="activation cache holds 10"):
        CachedChunkReader(cache, tokens, reader, sae).read(texts[5:15], 5, 0, 8)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_evidence_from_the_cache_equals_evidence_from_the_model(
    tiny_llama: Any, tmp_path: Path
) -> None:
    texts = make_texts(70)
    plan, reader, tokens = _cache(tmp_path, tiny_llama, texts)
    cache = build_activation_cache(plan, reader, tokens)
    sae = topk_sae(tiny_llama.d_model)
    key = {"kind": "test"}
    common: dict[str, Any] = {"config": CONFIG, "texts_per_chunk": PER_CHUNK}
    from_model = SAEChunkReader(reader, sae)  # tokenizes every chunk again
    build_evidence(from_model, texts, tmp_path / "model", key, **common)
    with_tokens = SAEChunkReader(reader, sae, tokens=tokens)
    build_evidence(with_tokens, texts, tmp_path / "tokens", key, **common)
    from_cache = CachedChunkReader(cache, tokens, reader, sae)
    build_evidence(from_cache, texts, tmp_path / "cache", key, **common)
    model_files = _files(tmp_path / "model")
    assert set(model_files) == {
        "contexts.safetensors",
        "features.safetensors",
        "pool.safetensors",
        "manifest.json",
    }
    for other in ("tokens", "cache"):
        files = _files(tmp_path / other)
        for name in ("contexts.safetensors", "features.safetensors", "pool.safetensors"):
            assert files[name] == model_files[name], f"{other}: {name} differs"
    from probes.evidence.store import EvidenceStore

    store = EvidenceStore(tmp_path / "cache", tiny_llama.tokenizer)
    assert len(store.firing_features()) > 0


def test_read_runs_split_at_multiples_of_the_read_size() -> None:
    assert read_runs(20, 40, 16) == [(20, 32), (32, 48), (48, 60)]
    assert read_runs(32, 16, 16) == [(32, 48)]
    assert read_runs(5, 3, 16) == [(5, 8)]
    assert read_runs(20, 40, None) == [(20, 60)]


def test_a_texts_slice_is_the_batch_of_those_texts_alone(tiny_llama: Any) -> None:
    texts = make_texts(12)
    reader = _reader(tiny_llama)
    whole = reader.tokenize(texts, with_spans=False)
    part = whole.texts_slice(3, 9)
    alone = reader.tokenize(texts[3:9], with_spans=False)
    assert part.row_text == alone.row_text and part.row_token_start == alone.row_token_start
    width = alone.input_ids_BT.shape[1]  # the whole batch pads to its own longest row
    assert torch.equal(part.valid_BT[:, :width], alone.valid_BT)
    assert torch.equal(
        part.input_ids_BT[:, :width][alone.attention_mask_BT.bool()],
        alone.input_ids_BT[alone.attention_mask_BT.bool()],
    )
    assert not part.valid_BT[:, width:].any()
    assert whole.texts_slice(12, 12).input_ids_BT.shape[0] == 0


class _RecordingReader(ActivationReader):
    """The real reader, noting how many texts each model read covers."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.texts_read: list[int] = []

    def read_tokens(self, batch: TokenBatch, hookpoint: str) -> torch.Tensor:
        self.texts_read.append(len(set(batch.row_text)))
        return super().read_tokens(batch, hookpoint)


def test_larger_update_chunks_read_the_model_in_the_caches_runs(
    tiny_llama: Any, tmp_path: Path
) -> None:
    """Accumulator updates of 40 texts, the model read (and the cache built) 16 texts at a
    time: which rows share a forward changes bfloat16 activations, so the pass from the
    model reads exactly the cache's runs, and both give the same bytes."""
    texts = make_texts(70)
    plan, _, tokens = _cache(tmp_path, tiny_llama, texts)
    reader = _RecordingReader(tiny_llama, [HOOK], context_length=24, window_overlap=4, batch_size=5)
    cache = build_activation_cache(plan, reader, tokens)
    assert reader.texts_read == [16, 16, 16, 16, 6]
    sae = topk_sae(tiny_llama.d_model)
    common: dict[str, Any] = {"config": CONFIG, "texts_per_chunk": 40}
    reader.texts_read.clear()
    from_model = SAEChunkReader(reader, sae, tokens, texts_per_read=PER_CHUNK)
    build_evidence(from_model, texts, tmp_path / "model", {"kind": "test"}, **common)
    assert reader.texts_read == [16, 16, 8, 8, 16, 6]  # 0-16-32-40 | 40-48-64-70
    from_cache = CachedChunkReader(cache, tokens, reader, sae)
    build_evidence(from_cache, texts, tmp_path / "cache", {"kind": "test"}, **common)
    model_files, cache_files = _files(tmp_path / "model"), _files(tmp_path / "cache")
    for name in ("contexts.safetensors", "features.safetensors", "pool.safetensors"):
        assert cache_files[name] == model_files[name], name


def test_a_cache_of_another_corpus_is_refused(tiny_llama: Any, tmp_path: Path) -> None:
    texts = make_texts(20)
    plan, reader, tokens = _cache(tmp_path, tiny_llama, texts)
    cache = build_activation_cache(plan, reader, tokens)
    other = token_cache(tmp_path / "tokens", make_texts(20, seed=5), tiny_llama.tokenizer)
    with pytest.raises(ValueError, match="another corpus"):
        CachedChunkReader(cache, other, reader, topk_sae(tiny_llama.d_model))

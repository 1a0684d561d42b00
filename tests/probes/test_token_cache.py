"""The token cache: built once, keyed by corpus and tokenizer, and its model rows equal to
what tokenizing the texts again gives (the evidence pass and SAE training rely on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from probes.token_cache import (
    TokenCacheError,
    cut_rows,
    open_token_cache,
    prefix_and_pad,
    token_batch,
    token_cache,
)
from probes.tokenization import tokenize_batch
from tests.conftest import build_bos_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "def add(a, b):\n    return a + b  # numbers one two three 42 " * 6,
    "caf\u00e9 na\u00efve \U0001f600 emoji and unicode",
    "short",
    "Colours: red, green, blue. Animals: cat, dog, owl. " * 3,
]


def _same_batch(a: Any, b: Any) -> None:
    assert torch.equal(a.input_ids_BT, b.input_ids_BT)
    assert torch.equal(a.attention_mask_BT, b.attention_mask_BT)
    assert torch.equal(a.valid_BT, b.valid_BT)
    assert a.row_text == b.row_text
    assert a.row_token_start == b.row_token_start


@pytest.mark.parametrize("overflow", ["window", "truncate"])
@pytest.mark.parametrize(("context_length", "overlap"), [(16, 0), (16, 5), (9, 3), (200, 0)])
@pytest.mark.parametrize("bos", [False, True])
def test_rows_equal_tokenizing_again(
    tmp_path: Path,
    smollm2_tokenizer: Any,
    overflow: Any,
    context_length: int,
    overlap: int,
    bos: bool,
) -> None:
    tokenizer = build_bos_tokenizer() if bos else smollm2_tokenizer
    cache = token_cache(tmp_path, TEXTS, tokenizer)
    prefix, pad = prefix_and_pad(tokenizer, None)
    # any subset of texts, in any order, as the shuffled training stream asks for them
    for picked in ([0, 1, 2, 3, 4, 5], [5, 2, 0], [1], [2, 2]):
        if overflow == "truncate" and overlap:
            continue
        expected = tokenize_batch(
            tokenizer,
            [TEXTS[i] for i in picked],
            context_length,
            overflow,
            overlap,
            with_spans=False,
        )
        got = token_batch(cache, np.array(picked), context_length, overflow, overlap, prefix, pad)
        _same_batch(got, expected)


def test_cache_is_reused_and_keyed_by_corpus_and_tokenizer(
    tmp_path: Path, smollm2_tokenizer: Any
) -> None:
    first = token_cache(tmp_path, TEXTS, smollm2_tokenizer)
    assert first.n_texts == len(TEXTS)
    assert first.n_tokens == sum(
        len(ids) for ids in smollm2_tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    )
    stamp = (first.folder / "tokens.i32").stat().st_mtime_ns
    again = token_cache(tmp_path, TEXTS, smollm2_tokenizer)
    assert again.folder == first.folder
    assert (again.folder / "tokens.i32").stat().st_mtime_ns == stamp  # not rebuilt
    other_corpus = token_cache(tmp_path, [*TEXTS, "one more"], smollm2_tokenizer)
    other_tokenizer = token_cache(tmp_path, TEXTS, build_bos_tokenizer())
    assert len({first.key, other_corpus.key, other_tokenizer.key}) == 3


def test_unfinished_build_is_started_over(tmp_path: Path, smollm2_tokenizer: Any) -> None:
    cache = token_cache(tmp_path, TEXTS, smollm2_tokenizer)
    expected = np.array(cache.token_ids)
    (cache.folder / "manifest.json").unlink()  # as if killed before the manifest
    (cache.folder / "tokens.i32").write_bytes(b"garbage")
    assert open_token_cache(cache.folder) is None
    rebuilt = token_cache(tmp_path, TEXTS, smollm2_tokenizer)
    assert np.array_equal(rebuilt.token_ids, expected)


def test_a_broken_manifest_says_what_to_delete(tmp_path: Path, smollm2_tokenizer: Any) -> None:
    cache = token_cache(tmp_path, TEXTS, smollm2_tokenizer)
    (cache.folder / "manifest.json").write_text("{not json")
    with pytest.raises(TokenCacheError, match="delete"):
        open_token_cache(cache.folder)


def test_splits_match_the_evidence_split_and_are_kept(
    tmp_path: Path, smollm2_tokenizer: Any
) -> None:
    from probes.corpus import text_splits

    texts = [f"text number {i}" for i in range(200)]
    cache = token_cache(tmp_path, texts, smollm2_tokenizer)
    labels = cache.splits(texts, 0.2, 0)
    assert np.array_equal(labels, text_splits(texts, 0.2, 0).numpy())
    assert 0 < labels.sum() < len(texts)
    assert np.array_equal(cache.splits([], 0.2, 0), labels)  # read back, texts not needed
    with pytest.raises(TokenCacheError, match="give its corpus"):
        cache.splits(texts[:3], 0.5, 1)


def test_cut_rows_counts_windows() -> None:
    rows = cut_rows(np.array([0, 10, 11, 25]), room=10, overflow="window", overlap=4)
    # 0 -> one empty row; 10 -> one; 11 -> two (10, then 4 context + 1); 25 -> 10, 6, 6, 3
    assert rows.text.tolist() == [0, 1, 2, 2, 3, 3, 3, 3]
    assert rows.n_valid.tolist() == [0, 10, 10, 1, 10, 6, 6, 3]
    assert rows.start.tolist() == [0, 0, 0, 10, 0, 10, 16, 22]
    assert rows.n_context.tolist() == [0, 0, 0, 4, 0, 4, 4, 4]

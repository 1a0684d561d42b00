"""The evidence pass end to end: tiny real model + SAE and planted features, checked
against a brute-force computation from the very activations the pass read."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from probes.corpus import text_splits
from probes.evidence.accumulators import pair_priority
from probes.evidence.build import build_evidence
from probes.evidence.config import EXPLAIN, SCORE, EvidenceConfig, EvidenceError
from probes.evidence.sources import ContextChunk, EntryBatch, SAEChunkReader, SourceChunkReader
from probes.evidence.store import (
    LEFT_CONTEXT,
    EvidenceStore,
    Example,
    FeatureNotInEvidenceError,
)
from probes.model import SubjectModel
from probes.planted import PlantedFeatures, default_spec_path
from probes.reader import ActivationReader
from probes.sae_runner import SAEFeatureSource
from sae import SAEConfig, SparseAutoencoder, build_sae

WIDTH = 8
CONFIG = EvidenceConfig(
    context_width=WIDTH,
    top_k=5,
    n_quantiles=3,
    explain_sample=7,
    score_sample=9,
    score_fraction=0.3,
    pool_size=40,
    seed=11,
)
WORDS = [
    *(
        [
            "the",
            "a",
            "love",
            "of",
            "course",
            "dog",
            "cat",
            "never",
            "red",
            "blue",
            "one",
            "two",
            "42",
            "(",
            ")",
            "?",
            "time",
            "day",
        ]
    ),
    *(
        [
            "shell",
            "grep",
            "computer",
            "quick",
            "brown",
            "fox",
            "jumps",
            "over",
            "lazy",
            "numbers",
            "three",
            "bugs",
        ]
    ),
]


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))) for _ in range(n)]
    texts[5] = texts[-1]  # a duplicate text: both copies must land in the same split
    return texts


def topk_sae(d_in: int, d_sae: int = 48, k: int = 4) -> SparseAutoencoder:
    sae = build_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k))
    sae.init_weights(3)
    return sae


@dataclass
class Recording:
    """Wraps a chunk reader and keeps copies of everything it produced."""

    inner: Any
    chunks: list[ContextChunk] = field(default_factory=list)
    batches: list[EntryBatch] = field(default_factory=list)
    reads: int = 0

    @property
    def n_features(self) -> int:
        return int(self.inner.n_features)

    def read(
        self, texts: Sequence[str], first_text: int, first_context: int, width: int
    ) -> tuple[ContextChunk, Iterator[EntryBatch]]:
        self.reads += 1
        contexts, batches = self.inner.read(texts, first_text, first_context, width)
        self.chunks.append(contexts)
        return contexts, self._keep(batches)

    def _keep(self, batches: Iterator[EntryBatch]) -> Iterator[EntryBatch]:
        for batch in batches:
            self.batches.append(batch)
            yield batch


def build(*args: Any, **kwargs: Any) -> Any:
    """build_evidence in chunks of 16 texts, so small corpora still span several chunks."""
    return build_evidence(*args, **{"texts_per_chunk": 16, **kwargs})


def sae_reader(subject: SubjectModel, sae: SparseAutoencoder) -> SAEChunkReader:
    reader = ActivationReader(subject, ["layers.1"], context_length=64, batch_size=5)
    return SAEChunkReader(reader, sae)


@pytest.fixture(scope="module")
def tiny_build(
    tiny_llama: SubjectModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EvidenceStore, Recording, list[str]]:
    texts = make_texts(120)
    recording = Recording(sae_reader(tiny_llama, topk_sae(tiny_llama.d_model)))
    folder = tmp_path_factory.mktemp("evidence")
    build(recording, texts, folder, {"kind": "test"}, CONFIG)
    return EvidenceStore(folder, tiny_llama.tokenizer), recording, texts


# -- brute force from the recorded entries ---------------------------------------------


def brute(recording: Recording, texts: list[str]) -> dict[str, Any]:
    split_T = text_splits(texts, CONFIG.score_fraction, CONFIG.seed)
    context_text = torch.cat([c.text for c in recording.chunks])
    split_C = split_T[context_text]
    windows: dict[tuple[int, int], torch.Tensor] = defaultdict(lambda: torch.zeros(WIDTH))
    count: dict[int, int] = defaultdict(int)
    for b in recording.batches:
        for c, p, f, v in zip(
            b.context_N.tolist(),
            b.pos_N.tolist(),
            b.feature_N.tolist(),
            b.value_N.tolist(),
            strict=True,
        ):
            if v > 0:
                windows[(f, c)][p] = v
                count[f] += 1
    per_split: dict[int, dict[int, list[tuple[int, float]]]] = {0: defaultdict(list), 1: {}}
    per_split[SCORE] = defaultdict(list)
    for (f, c), acts in windows.items():
        per_split[int(split_C[c])][f].append((c, float(acts.max())))
    return {"windows": windows, "per_split": per_split, "count": count, "split_C": split_C}


def sample_order(seed: int, f: int, row: list[tuple[int, float]]) -> list[tuple[int, float]]:
    contexts = torch.tensor([c for c, _ in row], dtype=torch.int64)
    priority = pair_priority(seed, torch.full_like(contexts, f), contexts).tolist()
    return [cv for _, cv in sorted(zip(priority, row, strict=True))]


def check_examples(examples: list[Example], expected: list[tuple[int, float]], truth: Any) -> None:
    assert [(e.context, e.max_act) for e in examples] == [
        (c, pytest.approx(v)) for c, v in expected
    ]
    for e in examples:
        window = truth["windows"][(_feature(e, truth), e.context)]
        assert e.acts == pytest.approx(window[: len(e.acts)].half().float().tolist())


def _feature(e: Example, truth: Any) -> int:
    return truth["current"]


def test_top_k_and_quantiles_equal_brute_force(tiny_build: Any) -> None:
    store, recording, texts = tiny_build
    truth = brute(recording, texts)
    n_checked = 0
    for f in range(store.n_features):
        truth["current"] = f
        explain = truth["per_split"][EXPLAIN].get(f, [])
        score = truth["per_split"][SCORE].get(f, [])
        evidence = store.feature(f)
        top = sorted(explain, key=lambda cv: (-cv[1], cv[0]))[: CONFIG.top_k]
        check_examples(evidence.top, top, truth)
        sample = sample_order(CONFIG.seed, f, explain)[: CONFIG.explain_sample]
        check_quantiles(evidence.quantiles, sample, truth)
        held_out = sample_order(CONFIG.seed + 1, f, score)[: CONFIG.score_sample]
        check_quantiles(store.scoring_examples(f).quantiles, held_out, truth)
        assert evidence.stats.fired_tokens == truth["count"].get(f, 0)
        n_checked += len(explain) > CONFIG.top_k and len(score) > CONFIG.n_quantiles
    assert n_checked >= 10  # many features exercise full rows in both splits


def check_quantiles(bins: Any, sample: list[tuple[int, float]], truth: Any) -> None:
    n, q = len(sample), CONFIG.n_quantiles
    ranked = sorted(range(n), key=lambda i: sample[i][1])
    expected = [sorted(ranked[b * n // q : (b + 1) * n // q]) for b in range(q)]
    expected = [members for members in expected if members]
    assert len(bins) == len(expected)
    for got, members in zip(bins, expected, strict=True):
        check_examples(got.examples, [sample[i] for i in members], truth)
        assert got.lo == pytest.approx(min(sample[i][1] for i in members))


def test_pass_entries_equal_the_feature_source(tiny_build: Any, tiny_llama: Any) -> None:
    """What the pass read is what the model + SAE give for each text on its own."""
    store, recording, texts = tiny_build
    sae = recording.inner.sae
    dense = SAEFeatureSource(tiny_llama, sae, "layers.1", context_length=64).dense(
        texts[:30], list(range(sae.d_sae))
    )
    for evidence in (store.feature(f) for f in range(0, sae.d_sae, 7)):
        for e in evidence.top:
            if e.text_index < 30:
                codes = dense[e.text_index][e.start : e.start + len(e.acts), evidence.feature]
                assert e.acts == pytest.approx(codes.tolist(), rel=2e-3, abs=1e-3)


def test_splits_are_disjoint_by_text(tiny_build: Any) -> None:
    store, _, texts = tiny_build
    explain_texts: set[int] = set()
    score_texts: set[int] = set()
    for f in range(store.n_features):
        shown = store.feature(f)
        scored = store.scoring_examples(f)
        seen = shown.top + shown.non_activating + [e for b in shown.quantiles for e in b.examples]
        held = scored.non_activating + [e for b in scored.quantiles for e in b.examples]
        assert all(store.context_split(e.context) == EXPLAIN for e in seen)
        assert all(store.context_split(e.context) == SCORE for e in held)
        explain_texts |= {texts[e.text_index] for e in seen}
        score_texts |= {texts[e.text_index] for e in held}
        quiet = {e.context for e in shown.non_activating + scored.non_activating}
        active = {e.context for e in seen + held if e.max_act > 0}
        assert not quiet & active
    assert explain_texts and score_texts and not explain_texts & score_texts
    assert store.manifest.n_contexts_per_split[SCORE] > 0


def test_non_activating_contexts_never_fire(tiny_build: Any) -> None:
    store, recording, texts = tiny_build
    truth = brute(recording, texts)
    for f in range(store.n_features):
        for e in store.feature(f).non_activating + store.scoring_examples(f).non_activating:
            assert (f, e.context) not in truth["windows"]
            assert e.acts == [0.0] * len(e.tokens)


def test_output_side_and_unknown_feature(tiny_llama: Any, tmp_path: Path) -> None:
    from probes.evidence.config import OutputSide
    from probes.evidence.output_side import model_logit_lens, similar_features

    sae = topk_sae(tiny_llama.d_model)

    def output_side(config: EvidenceConfig) -> OutputSide:
        lens = model_logit_lens(sae.W_dec.detach(), tiny_llama.model, n=config.logit_lens_n)
        return OutputSide(lens, *similar_features(sae.W_dec.detach(), n=config.similar_n))

    config = CONFIG.model_copy(update={"logit_lens_n": 4, "similar_n": 3})
    texts = make_texts(20)
    reader = sae_reader(tiny_llama, sae)
    build(reader, texts, tmp_path, {}, config, output_side=output_side)
    store = EvidenceStore(tmp_path, tiny_llama.tokenizer)
    evidence = store.feature(2)
    expected = model_logit_lens(sae.W_dec.detach()[2:3], tiny_llama.model, n=4)
    assert [t.token_id for t in evidence.promoted or []] == expected.promoted_ids_FN[0].tolist()
    assert [n.feature for n in evidence.similar or []] == similar_features(sae.W_dec.detach(), n=3)[
        0
    ][2].tolist()
    with pytest.raises(FeatureNotInEvidenceError, match=r"valid indices 0\.\.47"):
        store.feature(48)


# -- resume, cache, bad input ----------------------------------------------------------


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_identical_files(tiny_llama: Any, tmp_path: Path) -> None:
    texts = make_texts(90, seed=2)
    sae = topk_sae(tiny_llama.d_model)
    straight = tmp_path / "straight"
    build(sae_reader(tiny_llama, sae), texts, straight, {}, CONFIG)

    def stop_after_three(tokens: int, chunk_tokens: int) -> None:
        stop_after_three.calls += 1  # type: ignore[attr-defined]
        if stop_after_three.calls == 3:  # type: ignore[attr-defined]
            raise Interrupt

    stop_after_three.calls = 0  # type: ignore[attr-defined]
    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        build(
            sae_reader(tiny_llama, sae),
            texts,
            resumed,
            {},
            CONFIG,
            on_chunk=stop_after_three,
            checkpoint_seconds=0,
        )
    assert (resumed / "checkpoint" / "state.safetensors").exists()
    assert not (resumed / "manifest.json").exists()
    recording = Recording(sae_reader(tiny_llama, sae))
    build(recording, texts, resumed, {}, CONFIG, texts_per_chunk=50)  # the checkpoint's wins
    assert recording.reads == 6 - 3  # 90 texts / 16 per chunk: only the rest was read
    assert not (resumed / "checkpoint").exists()
    for name in ("features.safetensors", "contexts.safetensors", "pool.safetensors"):
        assert (straight / name).read_bytes() == (resumed / name).read_bytes(), name


def test_finished_evidence_is_reused_and_guarded(tiny_llama: Any, tmp_path: Path) -> None:
    texts = make_texts(20)
    sae = topk_sae(tiny_llama.d_model)
    first = build(sae_reader(tiny_llama, sae), texts, tmp_path, {"sae": "a"}, CONFIG)
    recording = Recording(sae_reader(tiny_llama, sae))
    again = build(recording, texts, tmp_path, {"sae": "a"}, CONFIG)
    assert again == first and recording.reads == 0
    with pytest.raises(EvidenceError, match="another corpus, source or config"):
        build(recording, texts, tmp_path, {"sae": "b"}, CONFIG)
    with pytest.raises(EvidenceError, match="no texts"):
        build(recording, [], tmp_path / "empty", {}, CONFIG)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(EvidenceError, match="not an evidence manifest"):
        EvidenceStore(tmp_path, tiny_llama.tokenizer)
    with pytest.raises(EvidenceError, match="evidence build"):
        EvidenceStore(tmp_path / "nothing", tiny_llama.tokenizer)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="hist_lo"):
        EvidenceConfig(hist_lo=10.0, hist_hi=1.0)
    with pytest.raises(ValueError, match="score_fraction"):
        EvidenceConfig(score_fraction=1.5)


# -- planted features ------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_build(
    smollm2_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EvidenceStore, PlantedFeatures, list[str]]:
    planted = PlantedFeatures.from_file(default_spec_path(), smollm2_tokenizer)
    rng = random.Random(5)
    phrases = [
        "I love my dog, of course.",
        "Never say never? Why not!",
        'He said "hello there" at 10:42 (twice).',
        "The cat sat on the red mat for an hour.",
        "def __init__(self):\n    return None",
        "-- Mark Twain",
        "GNU grep and the UNIX shell are not hard.",
    ]
    texts = [" ".join(rng.choice(phrases) for _ in range(rng.randint(1, 6))) for _ in range(150)]
    folder = tmp_path_factory.mktemp("planted-evidence")
    config = CONFIG.model_copy(update={"context_width": 16})
    build(SourceChunkReader(planted, smollm2_tokenizer), texts, folder, {}, config)
    return EvidenceStore(folder, smollm2_tokenizer), planted, texts


def test_planted_top_contexts_match_the_rule(planted_build: Any) -> None:
    store, planted, texts = planted_build
    fired = long_left = 0
    for f, name in enumerate(planted.feature_names):
        evidence = store.feature(f)
        for e in evidence.top:
            truth = planted.activations([texts[e.text_index]])[0]
            dense = truth.dense([f])[e.start : e.start + len(e.tokens), 0]
            assert e.acts == dense.tolist(), (name, e.text)
            assert e.max_act == max(e.acts) > 0
            # The left context is the text's own tokens right before the example.
            text_tokens = [t.text for t in truth.tokens]
            left = min(LEFT_CONTEXT, e.start)
            assert e.before == text_tokens[e.start - left : e.start], (name, e.text)
            assert e.tokens == text_tokens[e.start : e.start + len(e.tokens)]
            long_left += e.start > LEFT_CONTEXT
        for e in evidence.non_activating:
            truth = planted.activations([texts[e.text_index]])[0]
            assert not truth.dense([f])[e.start : e.start + len(e.tokens), 0].any()
        fired += bool(evidence.top)
    assert fired >= 12 and long_left > 0
    love = store.feature(planted.feature_index("word-love"))
    assert all("love" in e.tokens[e.peak].lower() for e in love.top) and love.top


def test_chunk_size_does_not_change_the_evidence(planted_build: Any, tmp_path: Path) -> None:
    """Planted activations are exact, so other chunks (other batches, other update
    boundaries) must give byte-identical files."""
    store, planted, texts = planted_build
    config = CONFIG.model_copy(update={"context_width": 16})
    reader = SourceChunkReader(planted, planted.tokenizer)
    build(reader, texts, tmp_path, {}, config, texts_per_chunk=7)
    for name in ("features.safetensors", "contexts.safetensors", "pool.safetensors"):
        assert (store.folder / name).read_bytes() == (tmp_path / name).read_bytes(), name

"""Hard negatives on evidence built from a real (tiny) model and SAE, checked against
every firing recorded in the pass: each is a held-out context where the feature never
fires that holds one of its most-fired tokens, or where a near feature fires; and a
judge that answers "yes" wherever the top tokens occur is caught by them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from evals.core import Explained, Highlighted, JudgeUnavailable, Score, scoring_set
from evals.hard_negatives import TOP_TOKENS, hard_negatives, most_fired
from evals.report import markdown, summarize
from evals.results import BenchConfig
from evals.scorers import DetectionScorer, FuzzingScorer
from probes.evidence.config import SCORE, EvidenceConfig, OutputSide
from probes.evidence.output_side import model_logit_lens, similar_features
from probes.evidence.store import EvidenceStore, Example
from tests.probes.evidence.test_build import (
    CONFIG,
    Recording,
    brute,
    build,
    make_texts,
    sae_reader,
    topk_sae,
)


class TopTokenJudge:
    """Detects by token ids: an example fires when it holds one of `top`; a highlighting
    fits when it marks only tokens of `known` (blind to context, as a word list is)."""

    name = "top-token-ids"

    def __init__(self, top: set[int], known: set[int] | None = None) -> None:
        self.top = top
        self.known = known or top

    def can_judge(self, explained: Explained | None) -> bool:
        return True

    async def detect(self, explained: Explained, examples: Sequence[Example]) -> list[float]:
        return [float(bool(self.top & set(e.token_ids))) for e in examples]

    async def fuzz(self, explained: Explained, items: Sequence[Highlighted]) -> list[float]:
        return [
            float(
                any(item.marked)
                and all(
                    t in self.known
                    for t, m in zip(item.example.token_ids, item.marked, strict=True)
                    if m
                )
            )
            for item in items
        ]

    async def simulate(
        self, explained: Explained, examples: Sequence[Example]
    ) -> list[list[float]]:
        raise JudgeUnavailable("detection only")

    async def generate(self, explained: Explained, n: int) -> list[str]:
        raise JudgeUnavailable("detection only")

    async def intruder(
        self, explained: Explained | None, rounds: Sequence[Sequence[Highlighted]]
    ) -> list[list[float]]:
        raise JudgeUnavailable("detection only")

    async def pick_steered(
        self, explained: Explained, prompts: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[float]:
        raise JudgeUnavailable("detection only")


def test_hard_negatives_look_like_the_feature_and_never_fire(
    tiny_llama: Any, tmp_path: Path
) -> None:
    sae = topk_sae(tiny_llama.d_model)

    def output_side(config: EvidenceConfig) -> OutputSide:
        lens = model_logit_lens(sae.W_dec.detach(), tiny_llama.model, n=config.logit_lens_n)
        return OutputSide(lens, *similar_features(sae.W_dec.detach(), n=config.similar_n))

    texts = make_texts(160, seed=3)
    recording = Recording(sae_reader(tiny_llama, sae))
    config = CONFIG.model_copy(update={"logit_lens_n": 4, "similar_n": 5})
    build(recording, texts, tmp_path, {}, config, output_side=output_side)
    store = EvidenceStore(tmp_path, tiny_llama.tokenizer)
    truth = brute(recording, texts)
    kinds_seen: set[str] = set()
    caught = 0
    scores: list[Score] = []
    fuzz_hard: list[float] = []
    fuzz_random: list[float] = []
    for f in store.firing_features():
        evidence = store.feature(f)
        found, kinds = hard_negatives(store, evidence, 12)
        assert len(found) == len(kinds) <= 12
        top = {t.token_id for t in (evidence.token_firing or [])[:TOP_TOKENS]}
        near = [s.feature for s in evidence.similar or []][:5]
        for example, kind in zip(found, kinds, strict=True):
            assert store.context_split(example.context) == SCORE
            assert (f, example.context) not in truth["windows"]  # it never fires there
            kinds_seen.add(kind)
            if kind == "tokens":
                assert top & set(example.token_ids)
            else:
                assert any((g, example.context) in truth["windows"] for g in near)
        # A judge that says yes wherever a top token occurs: no "tokens" one passes it.
        examples = scoring_set(store, f, evidence=evidence, hard=12)
        if "tokens" not in examples.hard_kind or not examples.activating:
            continue
        explained = Explained(feature=f, explainer="toptokens", text="its top tokens")
        score = asyncio.run(DetectionScorer().score(explained, examples, TopTokenJudge(top)))
        assert score.details["n_hard_negatives"] == len(examples.hard_negatives)
        assert score.details["hard_specificity"]["tokens"] == 0.0
        caught += 1
        # Fuzzing: each hard negative is highlighted on the feature's firing tokens when
        # it holds any, so a judge that knows only those tokens accepts exactly those.
        firing = {
            t for e in examples.activating for t, a in zip(e.token_ids, e.acts, strict=True) if a
        }
        judge = TopTokenJudge(top, known=firing)
        fuzzed = asyncio.run(FuzzingScorer().score(explained, examples, judge))
        assert fuzzed.details["n_hard_negatives"] == len(examples.hard_negatives)
        for kind, specificity in fuzzed.details["hard_specificity"].items():
            mine = [
                e for e, k in zip(examples.hard_negatives, examples.hard_kind, strict=True)
                if k == kind
            ]  # fmt: skip
            assert specificity == sum(not firing & set(e.token_ids) for e in mine) / len(mine)
        scores += [score, fuzzed]
        fuzz_hard.append(fuzzed.details["hard_negative_accuracy"])
        assert fuzzed.score is not None
        fuzz_random.append(fuzzed.score)
    assert kinds_seen == {"tokens", "similar"}
    assert caught > 0
    assert sum(fuzz_hard) < sum(fuzz_random)  # look-alikes fool a context-blind judge
    # The report sets random against hard negatives, per kind.
    bench = BenchConfig(
        run_id="hard", source="tiny", evidence_id="e", features=sorted({s.feature for s in scores}),
        explainers=["toptokens"], scorers=["detection", "fuzzing"], judges=["top-token-ids"],
        per_quantile=2, non_activating=20, seed=0,
    )  # fmt: skip
    summary = summarize(bench, scores, {}, {})
    row = summary.hard["toptokens"]
    assert row["tokens"] == 0.0 and row["hard"] is not None and row["random"] is not None
    text = markdown(bench, summary)
    assert "## Hard negatives" in text
    assert f"| toptokens | detection | {row['random']:.3f} | {row['hard']:.3f} |" in text
    fuzz = summary.hard_fuzzing["toptokens"]
    assert fuzz["hard"] == pytest.approx(sum(fuzz_hard) / len(fuzz_hard))
    assert f"| toptokens | fuzzing | {fuzz['random']:.3f} | {fuzz['hard']:.3f} |" in text


def test_evidence_without_a_firing_table_draws_same_token_negatives_from_its_contexts(
    planted_evidence: tuple[EvidenceStore, Any],
) -> None:
    """Evidence built before token firing tables (planted evidence has no decoder rows
    either) still gets "tokens" negatives: from the tokens it fires on most in its
    sampled contexts."""
    store, planted = planted_evidence
    feature = planted.feature_index("word-after-of")  # its words also occur elsewhere
    full = store.feature(feature)
    assert most_fired(full) == [t.token_id for t in (full.token_firing or [])[:TOP_TOKENS]]
    evidence = full.model_copy(update={"token_firing": None, "similar": None})
    top = set(most_fired(evidence))
    assert len(top) == TOP_TOKENS
    found, kinds = hard_negatives(store, evidence, 10)
    assert found and set(kinds) == {"tokens"}
    fired = set(store.pool_firing([feature]).tolist())
    for example in found:
        assert top & set(example.token_ids) and example.context not in fired

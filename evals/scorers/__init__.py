"""Scorers: each turns a judge's predictions on a feature's `ScoringSet` into one
`Score` (see `evals.core.Scorer`). A scorer never reports a number it did not measure:
a judge that cannot read the explanation, or any failure, gives `score=None` and the
reason in `error`."""

from evals.scorers.detection import DetectionScorer
from evals.scorers.embedding import EmbeddingScorer
from evals.scorers.fuzzing import FuzzingScorer
from evals.scorers.generative import GenerativeScorer
from evals.scorers.intruder import IntruderScorer
from evals.scorers.predictive import PredictiveScorer
from evals.scorers.simulation import SimulationScorer
from evals.scorers.truth import TruthScorer

__all__ = [
    "DetectionScorer",
    "EmbeddingScorer",
    "FuzzingScorer",
    "GenerativeScorer",
    "IntruderScorer",
    "PredictiveScorer",
    "SimulationScorer",
    "TruthScorer",
]

"""The explainers the benchmarks compare: the agent (adapted from its finished runs), a
one-shot LLM explainer, a top-tokens baseline, and imported explanations (Neuronpedia,
delphi). Each explainer has a `name` and `async explain(feature, evidence) -> Explained`;
importers return `dict[int, Explained]`.

`OneShotExplainer` (and the openai library under the LLM client, ~1 s to import) loads on
first use, so the baselines and importers stay cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evals.explainers.agent import AgentExplanationError, from_explanation, from_record
from evals.explainers.base import Explainer, NothingToExplainError
from evals.explainers.imported import ImportedExplanationsError, load_delphi, load_neuronpedia
from evals.explainers.toptokens import TokenStatsExplainer, TopTokensExplainer

if TYPE_CHECKING:
    from evals.explainers.oneshot import OneShotExplainer

__all__ = [
    "AgentExplanationError",
    "Explainer",
    "ImportedExplanationsError",
    "NothingToExplainError",
    "OneShotExplainer",
    "TokenStatsExplainer",
    "TopTokensExplainer",
    "from_explanation",
    "from_record",
    "load_delphi",
    "load_neuronpedia",
]


def __getattr__(name: str) -> Any:
    if name == "OneShotExplainer":
        from evals.explainers.oneshot import OneShotExplainer

        return OneShotExplainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

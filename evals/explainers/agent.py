"""The agent as an explainer under test: its finished run (an `Explanation`, or a stored
`ExplanationRecord`) as an `Explained`. Running the agent is the benchmark runner's job;
this only translates what a run produced, cost included."""

from __future__ import annotations

from pydantic import ValidationError

from agent.explanations import ExplanationRecord
from agent.state import Explanation
from errors import UserError
from evals.core import Explained, ExplainerCost
from predicates.language import as_dict, from_dict


class AgentExplanationError(UserError):
    """A finished run that cannot be scored: no text, or a predicate that does not parse."""


def from_explanation(explanation: Explanation, explainer: str = "agent") -> Explained:
    """`explanation` with its cost. Cached LLM answers cost nothing, as in the run's
    own accounting (`Cost.llm_calls` counts completions the server sent)."""
    feature = explanation.feature
    if not explanation.text.strip():
        raise AgentExplanationError(
            f"the {explainer} explanation of feature {feature} has no text "
            f"(stopped by {explanation.stopped_by!r}); it cannot be scored"
        )
    cost = explanation.cost
    return Explained(
        feature=feature,
        explainer=explainer,
        text=explanation.text,
        labels=list(explanation.labels),
        predicate=_checked_predicate(explanation, explainer),
        output_text=explanation.output_text,
        output_predicate=explanation.output_predicate,
        confidence=explanation.confidence,
        cost=ExplainerCost(
            llm_calls=cost.llm_calls,
            llm_cached_calls=cost.llm_cached_calls,
            llm_tokens=cost.llm_tokens,
            probe_texts=cost.probe_texts,
            seconds=cost.seconds,
        ),
    )


def from_record(record: ExplanationRecord, explainer: str = "agent") -> Explained:
    """A stored run (e.g. the feature's current record in Redis)."""
    return from_explanation(record.explanation, explainer)


def _checked_predicate(explanation: Explanation, explainer: str) -> dict[str, object] | None:
    """The predicate in its canonical form, checked here so a stored record written by
    another version fails now, with its feature named, rather than inside a judge."""
    if explanation.predicate is None:
        return None
    try:
        return as_dict(from_dict(explanation.predicate))
    except ValidationError as error:
        first = error.errors()[0]
        raise AgentExplanationError(
            f"the {explainer} explanation of feature {explanation.feature} carries a "
            f"predicate that does not parse ({first['msg']} at "
            f"{'.'.join(map(str, first['loc']))}); was it written by another glossator version?"
        ) from None

"""The one interface every reasoner backend speaks (openai, local, rules).

The graph's nodes own the bookkeeping (ids, statuses, budgets, cost); a reasoner only
thinks: it proposes hypotheses, writes experiments for one, judges one from its
experiments, and writes the conclusion. A `RoundReasoner` (the LLM reasoners) also writes
and judges the experiments of every open hypothesis in one step each: a round then costs
two LLM calls, however many hypotheses are open.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from agent.state import AgentState, Expect, Hypothesis, Status
from probes.evidence.store import FeatureEvidence
from probes.promotions import Promotions


class NewHypothesis(BaseModel):
    statement: str
    fires_on: str
    not_on: str
    side: str = "input"
    negative_control: bool = False
    predicate: dict[str, Any] | None = None


class NewExperiment(BaseModel):
    text: str = Field(min_length=1, max_length=400)
    expect: Expect
    expected_peak: str | None = None


class Verdict(BaseModel):
    status: Status
    reason: str
    cites: list[str]  # experiment ids that decided it
    refined_statement: str | None = None  # with status REFINED
    refined_predicate: dict[str, Any] | None = None


class Conclusion(BaseModel):
    text: str
    labels: list[str]
    evidence: list[str]
    confidence: float = Field(ge=0.0, le=1.0)
    predicate: dict[str, Any] | None = None


class Reasoner(Protocol):
    name: str

    async def hypothesize(
        self, state: AgentState, evidence: FeatureEvidence
    ) -> list[NewHypothesis]: ...

    async def design(
        self, state: AgentState, hypothesis: Hypothesis, evidence: FeatureEvidence
    ) -> list[NewExperiment]: ...

    async def analyze(
        self, state: AgentState, hypothesis: Hypothesis, evidence: FeatureEvidence
    ) -> Verdict: ...

    async def conclude(self, state: AgentState, evidence: FeatureEvidence) -> Conclusion: ...


class RoundReasoner(Reasoner, Protocol):
    async def design_round(
        self, state: AgentState, targets: list[Hypothesis], evidence: FeatureEvidence
    ) -> dict[str, list[NewExperiment]]: ...

    async def analyze_round(
        self, state: AgentState, targets: list[Hypothesis], evidence: FeatureEvidence
    ) -> dict[str, Verdict]: ...


class OutputReasoner(Reasoner, Protocol):
    """A reasoner that also explains the output side: it proposes claims about what the
    feature does to the next token from one steering experiment (`seen`) and judges each
    on another, on other texts (`tested`, whose id is `test`)."""

    async def output_hypotheses(
        self, state: AgentState, evidence: FeatureEvidence, seen: Promotions
    ) -> list[NewHypothesis]: ...

    async def judge_output(
        self, state: AgentState, hypothesis: Hypothesis, tested: Promotions, test: str
    ) -> Verdict: ...


def reads_outputs(reasoner: Reasoner) -> bool:
    """Whether `reasoner` explains the output side too."""
    return hasattr(reasoner, "output_hypotheses") and hasattr(reasoner, "judge_output")


def tests_rounds(reasoner: Reasoner) -> bool:
    """Whether `reasoner` designs and judges a round's hypotheses all at once."""
    return hasattr(reasoner, "design_round") and hasattr(reasoner, "analyze_round")

"""The agent's typed state: hypotheses, experiments, budget and cost, and the explanation.

One run explains one feature. Hypotheses say what should and should not activate the
feature; experiments are test texts with an expected outcome; each probe run's result
is recorded on its experiment, and verdicts cite the experiments that decided them.
Everything is a pydantic model, so the LangGraph checkpointer can store it and the
explanation store can keep it as versioned JSON.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

STATE_VERSION = 1


class Status(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    REFUTED = "refuted"
    REFINED = "refined"  # reworded; the new wording is open again


class Expect(StrEnum):
    HIGH = "high"  # the feature should fire (max activation >= the run's threshold)
    LOW = "low"  # it should stay below the threshold
    WEAK = "weak"  # it should fire at some strength, perhaps below the threshold


class Hypothesis(BaseModel):
    id: str  # "H1", "H2", ...
    statement: str  # what the feature responds to, in one sentence
    fires_on: str  # what should activate it
    not_on: str  # what should not
    side: Literal["input", "output"] = "input"
    negative_control: bool = False  # expected to be refuted; if it holds, the others fail
    status: Status = Status.OPEN
    decided_by: list[str] = Field(default_factory=list)  # experiment ids
    earlier: list[str] = Field(default_factory=list)  # previous statements, when refined
    predicate: dict[str, Any] | None = None  # the rules backend's executable form


class Outcome(BaseModel):
    """A probe run of one experiment's text."""

    max_act: float
    peak_token: str | None  # None when nothing fires
    peak_index: int | None
    tokens: list[str]
    acts: list[float]
    fired: bool  # max_act >= the run's threshold

    def fires_on(self, word: str) -> bool:
        """Whether the feature fired, at any strength, on the first whole-word occurrence
        of `word` (case aside), wherever the model's tokens split it."""
        text = "".join(self.tokens)
        pattern = rf"(?<![A-Za-z]){re.escape(word.strip())}(?![A-Za-z])"
        found = re.search(pattern, text, re.IGNORECASE)
        if found is None:
            return False
        start, end = found.span()
        at = 0
        for token, act in zip(self.tokens, self.acts, strict=True):
            if at < end and at + len(token) > start and act > 0:
                return True
            at += len(token)
        return False


class Experiment(BaseModel):
    id: str  # "E1", "E2", ...
    hypothesis: str  # the id of the hypothesis it tests
    text: str = Field(min_length=1, max_length=400)
    expect: Expect
    expected_peak: str | None = None  # the token the peak should be on, when HIGH
    outcome: Outcome | None = None

    @property
    def agrees(self) -> bool | None:
        """Whether the outcome matched the expectation (None before it ran)."""
        if self.outcome is None:
            return None
        if self.expect is Expect.WEAK:  # on the word it tests, when it names one
            if self.expected_peak is not None:
                return self.outcome.fires_on(self.expected_peak)
            return any(a > 0 for a in self.outcome.acts)
        return self.outcome.fired == (self.expect is Expect.HIGH)


class OutputTest(BaseModel):
    """A steering experiment: the feature clamped on some texts, and the next tokens it
    made more likely there (`probes.promotions`)."""

    id: str  # "S1", "S2", ...
    texts: list[str]
    clamp: float
    kl: float  # median KL(steered || clean) after the texts, nats
    promoted: list[str]  # the promoted tokens, largest gain first


class Budget(BaseModel):
    max_rounds: int = Field(default=10, ge=1)
    max_llm_tokens: int = Field(default=60_000, ge=0)
    max_probe_texts: int = Field(default=60, ge=1)
    # Rounds in a row that decide nothing, though each tests every open hypothesis (a
    # round reasoner's): the evidence has settled as far as this reasoner can take it.
    max_stalled_rounds: int = Field(default=2, ge=1)


class Cost(BaseModel):
    """What the run has spent. Part of the checkpointed state, so a resumed run keeps
    counting from where it was killed (and its LLM-token budget stays right)."""

    llm_calls: int = 0  # completions the server sent (each billed, valid or not)
    llm_cached_calls: int = 0  # answers from the response cache: no call, no tokens
    llm_tokens: int = 0  # input + output tokens of llm_calls
    llm_retries: int = 0  # extra requests: rate limits, timeouts, invalid output
    probe_texts: int = 0
    seconds: float = 0.0


class Explanation(BaseModel):
    version: int = STATE_VERSION
    feature: int
    text: str  # one sentence
    labels: list[str]  # several when the feature is polysemantic
    evidence: list[str]  # the experiment ids that support it
    confidence: float = Field(ge=0.0, le=1.0)
    cost: Cost
    stopped_by: str  # "decided", or "budget: rounds" / "budget: llm tokens" / ...
    predicate: dict[str, Any] | None = None
    # The output side, when steering confirmed a claim about it: what the feature does to
    # the next token, in prose and (from the rules reasoner) as a predicate.
    output_text: str | None = None
    output_predicate: dict[str, Any] | None = None

    @property
    def both_sides(self) -> str:
        """The explanation with its output side linked: "fires on X; when it fires it
        promotes Y"."""
        if not self.output_text:
            return self.text
        output = self.output_text.strip()
        output = output[:1].lower() + output[1:]
        return f"{self.text.strip().rstrip('.')}; when it fires, it {output}"


class AgentState(BaseModel):
    """The graph's state. `threshold` is SAGE's tau: half the mean of the top-10
    exemplars' max activation."""

    version: int = STATE_VERSION
    feature: int
    threshold: float = 0.0
    round: int = 0
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    experiments: list[Experiment] = Field(default_factory=list)
    output_tests: list[OutputTest] = Field(default_factory=list)
    budget: Budget = Field(default_factory=Budget)
    cost: Cost = Field(default_factory=Cost)
    explanation: Explanation | None = None
    next_step: Literal["design", "conclude"] | None = None
    stop_reason: str | None = None
    started_at: float = 0.0  # wall clock (time.time()) when the run began; survives resume
    testing: str | None = None  # the hypothesis the current round tests (the first of them)
    # A round reasoner tests every open hypothesis at once: the ones this round tests.
    round_targets: list[str] = Field(default_factory=list)
    stalled_rounds: int = 0  # such rounds in a row that decided nothing

    def hypothesis(self, hypothesis_id: str) -> Hypothesis:
        for h in self.hypotheses:
            if h.id == hypothesis_id:
                return h
        raise KeyError(f"no hypothesis {hypothesis_id}")

    def open_hypotheses(self) -> list[Hypothesis]:
        return [h for h in self.hypotheses if h.status in (Status.OPEN, Status.REFINED)]

    def tests_of(self, hypothesis_id: str) -> list[Experiment]:
        return [e for e in self.experiments if e.hypothesis == hypothesis_id]

    def budget_exhausted(self) -> str | None:
        """Which budget ran out, if any."""
        if self.round >= self.budget.max_rounds:
            return "budget: rounds"
        if self.stalled_rounds >= self.budget.max_stalled_rounds:
            return "budget: stalled rounds"
        if self.cost.llm_tokens >= self.budget.max_llm_tokens > 0:
            return "budget: llm tokens"
        if self.cost.probe_texts >= self.budget.max_probe_texts:
            return "budget: probe texts"
        return None

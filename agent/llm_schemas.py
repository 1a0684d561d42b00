"""The replies the LLM reasoner asks for: pydantic schemas sent as JSON schemas (a
grammar-constrained server keeps to them) and checked on arrival, with a worked example
of each for servers that decode without a schema."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

MAX_TEST_CHARS = 200
MAX_STATEMENT_CHARS = 200  # a hypothesis, an explanation, a reason: one or two sentences
MAX_NOTE_CHARS = 120  # fires_on / not_on: a few examples
MAX_LABEL_CHARS = 40
MAX_PEAK_CHARS = 40  # a token, or a word or two
MAX_HYPOTHESES = 5  # besides the negative control
LONGEST_REPLY_ENTRIES = MAX_HYPOTHESES + 1  # hypothesize's reply: and the control

Item = TypeVar("Item")


def reply_tokens(max_tokens: int | None, entries: int) -> int | None:
    """The length to ask for a reply with an entry per hypothesis: the configured reply
    length (None: the server's) for each two entries. At their longest, six hypotheses
    take ~900 tokens and their tests ~2,700; a small model under a grammar writes them
    long (SmolLM2's came back cut off at 1,024)."""
    return None if max_tokens is None else max_tokens * max(1, math.ceil(entries / 2))


# The replies' shapes carry every rule a JSON-schema grammar can enforce (list bounds,
# string lengths, one negative control, both kinds of experiment), so a server that
# decodes under the schema (llama.cpp, vLLM, OpenAI's structured outputs) cannot break
# them; the validators do the rest (drop repeated hypotheses, refuse a copy of the
# worked example), and the client re-asks with their message.
Statement = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STATEMENT_CHARS)]
Note = Annotated[str, StringConstraints(max_length=MAX_NOTE_CHARS)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS)]
TestText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEST_CHARS)]
Peak = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PEAK_CHARS)]
ExperimentId = Annotated[str, StringConstraints(pattern=r"^E[0-9]{1,3}$")]


class _HypothesisOut(BaseModel):
    statement: Statement
    fires_on: Note
    not_on: Note
    side: Literal["input", "output"] = "input"


class _Hypotheses(BaseModel):
    hypotheses: list[_HypothesisOut] = Field(min_length=2, max_length=MAX_HYPOTHESES)
    negative_control: _HypothesisOut

    @model_validator(mode="after")
    def _distinct_and_own(self) -> _Hypotheses:
        # Weak models repeat themselves: a repeat (of another hypothesis or of the
        # control) is dropped, not the whole reply, while one real hypothesis is left.
        control = _normal(self.negative_control.statement)
        kept = first_of_each(self.hypotheses, lambda h: _normal(h.statement), taken=[control])
        if not kept:
            raise ValueError(
                "every hypothesis repeats the negative control: write hypotheses that "
                "differ from each other and from the control"
            )
        self.hypotheses = kept
        statements = [h.statement for h in [*kept, self.negative_control]]
        _refuse_copy(statements, [h.statement for h in _EXAMPLE_HYPOTHESES], at_least=2)
        return self


class _HighTest(BaseModel):
    text: TestText
    expected_peak: Peak | None = None


class _LowTest(BaseModel):
    text: TestText


class _Experiments(BaseModel):
    high: list[_HighTest] = Field(min_length=1, max_length=3)
    low: list[_LowTest] = Field(min_length=1, max_length=3)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.high] + [e.text for e in self.low]

    @model_validator(mode="after")
    def _own(self) -> _Experiments:
        _refuse_copy(self.texts, EXAMPLE_EXPERIMENTS.texts)
        return self


class _VerdictOut(BaseModel):
    status: Literal["confirmed", "refuted", "refined", "open"]
    reason: Statement
    cites: list[ExperimentId] = Field(default_factory=list, max_length=12)
    refined_statement: Statement | None = None

    @model_validator(mode="after")
    def _own(self) -> _VerdictOut:
        _refuse_copy([self.reason], [_EXAMPLE_REASON])
        return self


class _ConclusionOut(BaseModel):
    explanation: Statement
    labels: list[Label] = Field(min_length=1, max_length=5)
    evidence: list[ExperimentId] = Field(default_factory=list, max_length=12)
    confidence: float = Field(ge=0.0, le=1.0)

    @field_validator("confidence", mode="before")
    @classmethod
    def _into_range(cls, value: Any) -> Any:
        # Grammars keep a number's shape but not always its bounds (llama.cpp does not):
        # a confidence of -0.5 means "none", not a reply to throw away.
        return min(max(value, 0.0), 1.0) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _own(self) -> _ConclusionOut:
        example = EXAMPLE_CONCLUSION
        if (
            _normal(self.explanation) == _normal(example.explanation)
            and self.labels == example.labels
        ):
            _refuse_copy([self.explanation], [example.explanation])
        return self


def first_of_each(
    items: Iterable[Item], key: Callable[[Item], str], taken: Iterable[str] = ()
) -> list[Item]:
    """The first item of each key, in order, none of a key already `taken`: weak models
    repeat themselves even under a grammar, and a repeat is dropped, not the reply."""
    seen = set(taken)
    kept = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            kept.append(item)
    return kept


def _normal(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def _refuse_copy(written: Sequence[str], example: Sequence[str], at_least: int = 1) -> None:
    """A ValueError when a reply repeats `at_least` of the worked example's texts (it is
    about a colour feature): small models copy it word for word instead of reading the
    evidence. One shared short phrase ("Numbers.") can be a real answer, so hypotheses
    count as copied from two on."""
    copied = sorted({_normal(w) for w in written} & {_normal(e) for e in example})
    if len(copied) >= at_least:
        raise ValueError(
            f"{copied[0]!r} is copied from the worked example, which is about another "
            "feature (colours); write your own, about this feature's evidence"
        )


# One filled-in reply per step, about an unrelated feature: small models copy a list of
# keys as values ({"statement": "fires_on"}) but follow a worked example. Built without
# validation: their own validators refuse them as copies.
_EXAMPLE_HYPOTHESES = [
    _HypothesisOut(statement="Names of colours.", fires_on="red, blue", not_on="shapes"),
    _HypothesisOut(statement="Words about painting.", fires_on="paint, brush", not_on="food"),
    _HypothesisOut(statement="Numbers.", fires_on="one, 42", not_on="colours"),
]
EXAMPLE_HYPOTHESES = _Hypotheses.model_construct(
    hypotheses=_EXAMPLE_HYPOTHESES[:2], negative_control=_EXAMPLE_HYPOTHESES[2]
)
EXAMPLE_EXPERIMENTS = _Experiments.model_construct(
    high=[_HighTest(text="She painted the door red.", expected_peak=" red")],
    low=[_LowTest(text="He opened the door slowly.")],
)
_EXAMPLE_REASON = "E1 fired on red; E2 stayed quiet."
EXAMPLE_VERDICT = _VerdictOut.model_construct(
    status="confirmed", reason=_EXAMPLE_REASON, cites=["E1", "E2"], refined_statement=None
)
EXAMPLE_CONCLUSION = _ConclusionOut.model_construct(
    explanation="Fires on names of colours such as red and blue.",
    labels=["colours"],
    evidence=["E1", "E2"],
    confidence=0.8,
)

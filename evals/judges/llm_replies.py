"""How the LLM judge reads its replies.

JSON replies are pydantic models: a reply that breaks a rule is fed back to the model
with the reason and asked again (by `LLMClient`). Each schema depends on how many items
were asked about; `sized(Schema, n)` makes the subclass that checks that count (its name
carries n, so cache keys differ too).

Replies with log-probabilities are read by pure functions: P(1) of a 0/1 answer, the
probability of each numbered choice (the intruder), and the expected activation of each
simulated token."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, Field, StringConstraints, create_model, model_validator

from llm_client import TextWithLogprobs, TokenLogprobs

SCALE = 10  # Bills et al. 2023: activations on a 0-10 scale
SCALE_TOKENS = [str(v) for v in range(SCALE + 1)]
MAX_TEXT_CHARS = 200  # generated texts, as short as the agent's experiments

S = TypeVar("S", bound="Sized")


class Sized(BaseModel):
    n: ClassVar[int] = 0  # how many items the prompt listed (set by `sized`)

    @classmethod
    def bounded(cls, n: int) -> dict[str, Any]:
        """Fields redeclared with their list's length bound for `n` items: it goes into
        the JSON schema, so a constrained decoder (the local model) keeps to it."""
        return {}


@cache
def sized(schema: type[S], n: int) -> type[S]:
    """`schema` checking replies about `n` items."""
    model = create_model(
        f"{schema.__name__}{n}", __base__=schema, __module__=__name__, **schema.bounded(n)
    )
    model.n = n
    return model


class Verdict(BaseModel):
    example: int
    answer: bool


class Verdicts(Sized):
    verdicts: list[Verdict]

    @classmethod
    def bounded(cls, n: int) -> dict[str, Any]:
        numbered = create_model(
            f"Verdict{n}",
            __base__=Verdict,
            __module__=__name__,
            example=(Annotated[int, Field(ge=1, le=n)], ...),
        )
        items = list[numbered]  # type: ignore[valid-type]
        return {"verdicts": (Annotated[items, Field(min_length=n, max_length=n)], ...)}

    @model_validator(mode="after")
    def _one_per_example(self) -> Verdicts:
        got = sorted(v.example for v in self.verdicts)
        if got != list(range(1, self.n + 1)):
            raise ValueError(
                f"give exactly one verdict for each example 1 to {self.n} (got examples {got})"
            )
        return self

    def in_order(self) -> list[bool]:
        return [v.answer for v in sorted(self.verdicts, key=lambda v: v.example)]


class Intruder(Sized):
    intruder: int  # the intruder's example number, 1 to n

    @classmethod
    def bounded(cls, n: int) -> dict[str, Any]:
        return {"intruder": (Annotated[int, Field(ge=1, le=n)], ...)}

    def probabilities(self) -> list[float]:
        """Per example, 1.0 for the one named, else 0.0."""
        return [float(i == self.intruder) for i in range(1, self.n + 1)]


class Choice(Sized):
    choice: int  # the chosen option's number, 1 to n

    @classmethod
    def bounded(cls, n: int) -> dict[str, Any]:
        return {"choice": (Annotated[int, Field(ge=1, le=n)], ...)}

    def probabilities(self) -> list[float]:
        """Per option, 1.0 for the one named, else 0.0."""
        return [float(i == self.choice) for i in range(1, self.n + 1)]


Activation = tuple[int, Annotated[float, Field(ge=0, le=SCALE)]]


class Activations(Sized):
    activations: list[Activation]

    @classmethod
    def bounded(cls, n: int) -> dict[str, Any]:
        return {"activations": (Annotated[list[Activation], Field(max_length=n)], ...)}

    @model_validator(mode="after")
    def _known_tokens(self) -> Activations:
        indices = [i for i, _ in self.activations]
        bad = [i for i in indices if not 0 <= i < self.n]
        if bad:
            raise ValueError(f"token indices {bad} are outside 0 to {self.n - 1}")
        if len(set(indices)) < len(indices):
            raise ValueError("list each token index at most once")
        return self

    def dense(self) -> list[float]:
        """Per token, its activation (0 where none was listed)."""
        out = [0.0] * self.n
        for i, value in self.activations:
            out[i] = value
        return out


# The length bound is in the schema: a server decoding under it (llama.cpp) otherwise
# writes one text until max_tokens cuts the JSON off.
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)
]


class Texts(Sized):
    texts: list[Text]

    @classmethod
    def bounded(cls, n: int) -> dict[str, Any]:
        return {"texts": (Annotated[list[Text], Field(min_length=n, max_length=2 * n)], ...)}

    @model_validator(mode="after")
    def _enough_distinct(self) -> Texts:
        if len(self.chosen()) < self.n:
            raise ValueError(f"write {self.n} different texts (got {len(set(self.texts))})")
        return self

    def chosen(self) -> list[str]:
        """The first n different texts (a longer list is cut, not refused)."""
        return list(dict.fromkeys(self.texts))[: self.n]


def candidate_mass(token: TokenLogprobs, candidates: Sequence[str]) -> dict[str, float]:
    """Probability of each candidate text at this position, from the top alternatives
    (and the chosen token), alternatives differing only in whitespace summed ("\\t3"
    and " 3" both count for "3")."""
    alternatives = {token.token: token.logprob, **token.top}
    mass = dict.fromkeys(candidates, 0.0)
    for text, logprob in alternatives.items():
        key = text.strip()
        if key in mass:
            mass[key] += math.exp(logprob)
    return mass


def binary_probability(tokens: Sequence[TokenLogprobs]) -> float | None:
    """P(1) / (P(0) + P(1)) at the first token that is a 0 or 1 digit; None when no
    such token was generated."""
    for t in tokens:
        if t.token.strip() in ("0", "1"):
            mass = candidate_mass(t, ["0", "1"])
            total = mass["0"] + mass["1"]
            return mass["1"] / total if total else None
    return None


def choice_probabilities(tokens: Sequence[TokenLogprobs], n: int) -> list[float] | None:
    """Per choice 1..n (single digits), its probability normalized over the choices, at
    the first digit token; None when there is none, it names no choice, or the choices
    have no mass among the alternatives."""
    choices = [str(i) for i in range(1, n + 1)]
    for t in tokens:
        if t.token.strip().isdigit():
            if t.token.strip() not in choices:
                return None
            mass = candidate_mass(t, choices)
            total = sum(mass.values())
            return [mass[c] / total for c in choices] if total else None
    return None


def expected_value(token: TokenLogprobs) -> float | None:
    """Sum of v * P(v) over v = 0..10, normalized over those values (Bills et al. 2023);
    None when none of them is among the alternatives."""
    mass = candidate_mass(token, SCALE_TOKENS)
    total = sum(mass.values())
    return sum(int(v) * p for v, p in mass.items()) / total if total else None


_LINE_RE = re.compile(r"[ \t]*(\d+)\t(?:.*\t)?[ ]*(\d+)[ \t]*")


def simulation_values(reply: TextWithLogprobs, n: int) -> list[float] | None:
    """Per token, the activation from "index<TAB>token<TAB>value" lines: the expected
    value at the value's token when the log-probabilities line up with the text, else
    the written number. None unless every index 0..n-1 appears exactly once with a
    value within the scale (lines that match nothing, e.g. a code fence, are skipped)."""
    starts = _token_starts(reply)
    values: dict[int, float] = {}
    offset = 0
    for line in reply.text.splitlines(keepends=True):
        m = _LINE_RE.fullmatch(line.rstrip("\r\n"))
        if m:
            index, digits = int(m.group(1)), m.group(2)
            if index >= n or index in values or int(digits) > SCALE:
                return None
            at = starts.get(offset + m.start(2))
            ev = expected_value(at) if at is not None and at.token.strip() == digits else None
            values[index] = ev if ev is not None else float(digits)
        offset += len(line)
    return [values[i] for i in range(n)] if len(values) == n else None


def _token_starts(reply: TextWithLogprobs) -> dict[int, TokenLogprobs]:
    """Character offset in the text -> the token covering it (empty when the tokens do
    not spell the text, e.g. a server that splits characters into bytes)."""
    if "".join(t.token for t in reply.tokens) != reply.text:
        return {}
    covering: dict[int, TokenLogprobs] = {}
    offset = 0
    for t in reply.tokens:
        for i in range(len(t.token)):
            covering[offset + i] = t
        offset += len(t.token)
    return covering

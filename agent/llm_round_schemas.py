"""The replies of the LLM reasoner's round steps: the tests, then the verdicts, of every
hypothesis a round tests, one reply each. The schemas are built per round, so the one
sent names the round's hypothesis ids (a grammar keeps to them) and asks one entry each."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field, create_model, model_validator

from agent.llm_schemas import (
    EXAMPLE_EXPERIMENTS,
    EXAMPLE_VERDICT,
    _Experiments,
    _VerdictOut,
    first_of_each,
)


class _Named(BaseModel):
    hypothesis: str  # first in the schema: a model names the hypothesis, then answers


class _TestsFor(_Experiments, _Named):
    pass


class _VerdictFor(_VerdictOut, _Named):
    pass


class _RoundReply(BaseModel):
    ids: ClassVar[tuple[str, ...]] = ()  # the round's hypotheses (set by the factory)


R = TypeVar("R", bound=_RoundReply)


# A round reply that names a hypothesis twice keeps its first entry; a hypothesis it
# skipped (a grammar cannot say "each id once") stays as it was, untested or open, for
# the next round: nothing is lost but that round's share.
class RoundTests(_RoundReply):
    tests: list[_TestsFor]

    @model_validator(mode="after")
    def _first_each(self) -> RoundTests:
        self.tests = first_of_each(self.tests, lambda t: t.hypothesis)
        return self


class RoundVerdicts(_RoundReply):
    verdicts: list[_VerdictFor]

    @model_validator(mode="after")
    def _first_each(self) -> RoundVerdicts:
        self.verdicts = first_of_each(self.verdicts, lambda v: v.hypothesis)
        return self


@cache
def round_tests(ids: tuple[str, ...]) -> type[RoundTests]:
    return _for_round(RoundTests, _TestsFor, "tests", ids)


@cache
def round_verdicts(ids: tuple[str, ...]) -> type[RoundVerdicts]:
    return _for_round(RoundVerdicts, _VerdictFor, "verdicts", ids)


def _for_round(base: type[R], item: type[BaseModel], field: str, ids: tuple[str, ...]) -> type[R]:
    named = "_".join(ids)
    one_of_ids: Any = Literal.__getitem__(ids)
    one = create_model(
        f"{item.__name__}_{named}", __base__=item, __module__=__name__, hypothesis=(one_of_ids, ...)
    )
    items: Any = Annotated[list[one], Field(min_length=len(ids), max_length=len(ids))]  # type: ignore[valid-type]
    fields: dict[str, Any] = {field: (items, ...)}
    model = create_model(f"{base.__name__}_{named}", __base__=base, __module__=__name__, **fields)
    model.ids = ids
    return model


# Worked examples (shown only where no schema shapes the reply), about a colour feature.
EXAMPLE_ROUND_TESTS = RoundTests.model_construct(
    tests=[_TestsFor.model_construct(hypothesis="H1", **dict(EXAMPLE_EXPERIMENTS))]
)
EXAMPLE_ROUND_VERDICTS = RoundVerdicts.model_construct(
    verdicts=[_VerdictFor.model_construct(hypothesis="H1", **dict(EXAMPLE_VERDICT))]
)

"""The LLM reasoner's output side: it reads one steering experiment (the tokens the
feature made more likely after texts it was clamped on, and the logit lens) and states
what the feature does to the next token, in prose; the claim is then judged by the LLM
against a second experiment on other texts, shown the tokens steering promoted there
and the likely tokens it did not.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field, model_validator

from agent.llm_schemas import Statement, _refuse_copy
from llm_client import delimit
from probes.evidence.store import FeatureEvidence
from probes.promotions import Promotions

SHOWN = 12  # tokens listed per side of a steering experiment
MAX_CLAIMS = 2
MIN_CLAIM_WORDS = 3  # "Promotes plural nouns."


class OutputClaimsOut(BaseModel):
    claims: list[Statement] = Field(min_length=1, max_length=MAX_CLAIMS)

    @model_validator(mode="after")
    def _own(self) -> OutputClaimsOut:
        _refuse_copy(self.claims, EXAMPLE_OUTPUT_CLAIMS.claims)
        bare = [c for c in self.claims if len(c.split()) < MIN_CLAIM_WORDS]
        if bare:  # SmolLM2-135M answered "Promotes", the instruction's first word
            raise ValueError(
                f"{bare[0]!r} names nothing: say what it promotes, in a sentence of at "
                f"least {MIN_CLAIM_WORDS} words"
            )
        return self


class OutputVerdictOut(BaseModel):
    holds: bool
    reason: Statement

    @model_validator(mode="after")
    def _own(self) -> OutputVerdictOut:
        _refuse_copy([self.reason], [EXAMPLE_OUTPUT_VERDICT.reason])
        return self


EXAMPLE_OUTPUT_CLAIMS = OutputClaimsOut.model_construct(
    claims=["Promotes names of colours (red, blue) as the next word."]
)
EXAMPLE_OUTPUT_VERDICT = OutputVerdictOut.model_construct(
    holds=True, reason="Red and blue head the promoted tokens; no unpromoted token is a colour."
)


def _listed(tokens: Sequence[str]) -> str:
    return ", ".join(repr(t) for t in tokens[:SHOWN]) or "(none)"


def render_steering(found: Promotions, label: str) -> str:
    """One steering experiment as the reasoner reads it: its promoted tokens, and likely
    tokens it left unpromoted (what a claim should not cover)."""
    promoted = found.promoted_tokens
    others = [c.token for c in found.candidates[found.promoted_count :][-SHOWN:]]
    return (
        f"Steering experiment {label} (the feature clamped high on {found.texts} texts; "
        f"median KL of the next-token distribution {found.kl:.3f} nats).\n"
        f"Tokens it made at least twice as likely, most first:\n"
        f"{delimit(f'{label}_promoted', _listed(promoted))}\n"
        f"Likely tokens it made less likely:\n{delimit(f'{label}_demoted', _listed(others))}"
    )


def propose_ask(evidence: FeatureEvidence, seen: Promotions, example: str) -> str:
    lens = [t.token for t in evidence.promoted or []]
    return (
        f"The logit lens of its decoder direction (tokens it points at):\n"
        f"{delimit('logit_lens', _listed(lens))}\n\n{render_steering(seen, 'S1')}\n\n"
        f"What does turning this feature up make the model say next? Write 1 or "
        f"{MAX_CLAIMS} claims, each one sentence that generalizes (a kind of token, not a "
        f"list of every token), starting with 'Promotes'. {example}"
    )


def judge_ask(statement: str, tested: Promotions, test: str, example: str) -> str:
    return (
        f"An output claim about this feature:\n{delimit('claim', statement)}\n\n"
        f"{render_steering(tested, test)}\n\nDoes the claim hold on this experiment (most "
        "promoted tokens fit it, and the tokens it made less likely do not)? Answer holds "
        f"true or false with a short reason. {example}"
    )

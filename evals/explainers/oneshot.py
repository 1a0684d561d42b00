"""The one-shot baseline: one LLM call from the top examples, in the style of Bills et
al. (2023) and delphi (Paulo et al. 2024): the explainer sees the top activating
contexts with the firing tokens marked (optionally a few samples from lower activation
quantiles) and answers with one sentence. No hypotheses, no experiments.

Examples are rendered exactly as the agent's LLM reasoner renders them (peak window,
⟦token⟧(act) marks, each one a `delimit()`ed data block), so the two explainers differ
in method, not in what they are shown.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.llm_reasoner import render_example, spread, without_marks
from evals.core import Explained, ExplainerCost
from evals.explainers.base import check_evidence
from llm_client import DATA_NOTE, LLMUsage, Message
from probes.evidence.store import FeatureEvidence

if TYPE_CHECKING:
    from llm_client.client import LLMClient

N_TOP = 20  # delphi and Bills et al. show the explainer on the order of 20 top examples
MAX_CHARS = 400

SYSTEM = (
    "You are an interpretability researcher. You will see text examples where one "
    "feature of a sparse autoencoder trained on a language model fires; a token wrapped "
    "as ⟦token⟧(2.5) is where it fired, with its activation. Say in one sentence what "
    "the feature responds to: what the marked tokens have in common and, when it "
    "matters, the context around them. Name specific words when it responds to specific "
    f"words; otherwise describe the pattern rather than listing examples. {DATA_NOTE}"
)


# What the prompt asks the reply to look like; small models copy it back as the answer
# (Gemma-3-270M did, on 3 of 4 planted features).
PLACEHOLDER = f"<one sentence, at most {MAX_CHARS} characters>"


class _OneShotOut(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    explanation: str = Field(min_length=1, max_length=MAX_CHARS)

    @field_validator("explanation")
    @classmethod
    def _not_the_placeholder(cls, text: str) -> str:
        if "at most" in text and "characters>" in text:
            raise ValueError(
                "this repeats the reply format; write the sentence that says what the "
                "feature responds to"
            )
        return text


class OneShotExplainer:
    """One `complete_json` call per feature through any `LLMClient` (an OpenAI-compatible
    server or an in-process model). LLM errors propagate: the explanation is failed."""

    def __init__(
        self,
        client: LLMClient,
        *,
        top: int = N_TOP,
        quantiles: int = 0,
        name: str = "oneshot",
        cache: bool = True,
    ) -> None:
        if top < 1 or quantiles < 0:
            raise ValueError(
                f"OneShotExplainer needs top >= 1 and quantiles >= 0, got {top}, {quantiles}"
            )
        self.client = client
        self.top = top
        self.quantiles = quantiles  # samples, one from each of this many spread-out bins
        self.name = name
        self.cache = cache

    def messages(self, evidence: FeatureEvidence) -> list[Message]:
        """The prompt: the system message, then the examples as delimited data."""
        lines = ["Top activating contexts:"]
        lines += [render_example(f"top_{i + 1}", e) for i, e in enumerate(evidence.top[: self.top])]
        bins = [b for b in spread(evidence.quantiles, self.quantiles) if b.examples]
        if bins:
            lines.append("Samples from across the activation quantiles (weakest first):")
            lines += [render_example(f"quantile_{b.index}", b.examples[0]) for b in bins]
        lines.append(
            f'\nWhat does this feature respond to? Reply as {{"explanation": "{PLACEHOLDER}"}}.'
        )
        return [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "\n".join(lines)},
        ]

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        start = time.perf_counter()
        check_evidence(self.name, feature, evidence)
        usage = LLMUsage()
        out = await self.client.complete_json(
            self.messages(evidence), _OneShotOut, purpose=self.name, usage=usage, cache=self.cache
        )
        cost = ExplainerCost(
            llm_calls=usage.calls,
            llm_cached_calls=usage.cached_calls,
            llm_tokens=usage.input_tokens + usage.output_tokens,
            seconds=time.perf_counter() - start,
        )
        return Explained(
            feature=feature, explainer=self.name, text=without_marks(out.explanation), cost=cost
        )

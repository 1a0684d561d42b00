"""What the graph's nodes need besides the state: the reasoner, the shared probe runner
and the feature's evidence. Not part of the checkpointed state.

LLM usage is not kept here either: each node runs its reasoner call through `think`,
which meters that call (`llm_client.metered`: per asyncio task, so concurrent runs on
one shared client never count each other's calls) and adds it to the run's
`state.cost`, so the checkpoint carries it and a resumed run goes on counting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.reasoner import Reasoner
from agent.state import AgentState, Cost
from llm_client import LLMUsage, metered
from probes.evidence.store import EvidenceStore, FeatureEvidence
from probes.probe_runner import ProbeRunner

T = TypeVar("T")
EVIDENCE_CACHE = 256  # features; far more than the runs a process has going at once


def with_usage(cost: Cost, usage: LLMUsage) -> Cost:
    """`cost` plus one call's LLM usage."""
    return cost.model_copy(
        update={
            "llm_calls": cost.llm_calls + usage.calls,
            "llm_cached_calls": cost.llm_cached_calls + usage.cached_calls,
            "llm_tokens": cost.llm_tokens + usage.input_tokens + usage.output_tokens,
            "llm_retries": cost.llm_retries + usage.retries,
        }
    )


@dataclass
class AgentDeps:
    reasoner: Reasoner
    probe: ProbeRunner
    store: EvidenceStore
    _evidence: OrderedDict[int, FeatureEvidence] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    async def aclose(self) -> None:
        """Stop the probe runner and close the reasoner's connections, if it has any."""
        await self.probe.close()
        close = getattr(self.reasoner, "aclose", None)
        if close is not None:
            await close()

    async def think(self, state: AgentState, call: Coroutine[Any, Any, T]) -> tuple[T, Cost]:
        """Await one reasoner call (a coroutine not yet started); its result, and the
        run's cost with the LLM usage of that call added (the rules reasoner adds none).
        A call that fails adds nothing: the node fails, and its update is never saved."""
        with metered() as usage:
            result = await call
        return result, with_usage(state.cost, usage)

    def forget(self, feature: int) -> None:
        """Drop a feature's cached evidence once no run needs it (a worker moves on)."""
        self._evidence.pop(feature, None)

    def evidence(self, feature: int) -> FeatureEvidence:
        """The explainer's view of the feature (explain split only). Read once per
        feature while its runs go on: every node of every round asks for it, and it never
        changes. The most recent EVIDENCE_CACHE features are kept, so a worker or server
        that explains thousands of features holds a bounded amount."""
        found = self._evidence.get(feature)
        if found is None:
            found = self._evidence[feature] = self.store.feature(feature, non_activating=50)
            while len(self._evidence) > EVIDENCE_CACHE:
                self._evidence.popitem(last=False)
        self._evidence.move_to_end(feature)
        return found

"""What the graph's nodes need besides the state: the reasoner, the shared probe runner
and the feature's evidence. Not part of the checkpointed state."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.probe import ProbeRunner
from agent.reasoner import Reasoner
from agent.state import AgentState, Cost
from probes.evidence.store import EvidenceStore, FeatureEvidence


@dataclass
class AgentDeps:
    reasoner: Reasoner
    probe: ProbeRunner
    store: EvidenceStore
    _evidence: dict[int, FeatureEvidence] = field(default_factory=dict, init=False, repr=False)

    async def aclose(self) -> None:
        """Stop the probe runner and close the reasoner's connections, if it has any."""
        await self.probe.close()
        close = getattr(self.reasoner, "aclose", None)
        if close is not None:
            await close()

    def llm_cost(self, state: AgentState) -> Cost:
        """The run's cost with the reasoner's LLM usage so far (reasoners that call an
        LLM keep it per feature in `usage_for`; the rules reasoner has none)."""
        usage_for = getattr(self.reasoner, "usage_for", None)
        if usage_for is None:
            return state.cost
        usage = usage_for(state.feature)
        tokens = usage.input_tokens + usage.output_tokens
        return state.cost.model_copy(update={"llm_calls": usage.calls, "llm_tokens": tokens})

    def evidence(self, feature: int) -> FeatureEvidence:
        """The explainer's view of the feature (explain split only). Read once per
        feature: every node of every round asks for it, and it never changes."""
        found = self._evidence.get(feature)
        if found is None:
            found = self._evidence[feature] = self.store.feature(feature, non_activating=50)
        return found

"""What the graph's nodes need besides the state: the reasoner, the shared probe runner
and the feature's evidence. Not part of the checkpointed state."""

from __future__ import annotations

from dataclasses import dataclass

from agent.probe import ProbeRunner
from agent.reasoner import Reasoner
from probes.evidence.store import EvidenceStore, FeatureEvidence


@dataclass
class AgentDeps:
    reasoner: Reasoner
    probe: ProbeRunner
    store: EvidenceStore

    def evidence(self, feature: int) -> FeatureEvidence:
        """The explainer's view of the feature (explain split only)."""
        return self.store.feature(feature, non_activating=50)

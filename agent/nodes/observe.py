"""Observe: read the feature's evidence and fix the run's firing threshold."""

from __future__ import annotations

import time
from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState
from probes.evidence.threshold import firing_threshold


async def observe(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    threshold = firing_threshold(deps.evidence(state.feature))
    return {"threshold": threshold, "started_at": state.started_at or time.time()}

"""Route: test more, or conclude (every hypothesis decided, or a budget spent)."""

from __future__ import annotations

from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState


async def route(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    if not state.open_hypotheses():
        return {"next_step": "conclude", "stop_reason": "decided"}
    spent = state.budget_exhausted()
    if spent is not None:
        return {"next_step": "conclude", "stop_reason": spent}
    return {"next_step": "design"}


def next_node(state: AgentState) -> str:
    return state.next_step or "conclude"

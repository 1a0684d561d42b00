"""The SAGE-style loop as a LangGraph StateGraph:

    observe -> hypothesize -> design -> run -> analyze -> route -> design ...
            -> outputs (steering, for the output side) -> conclude

`build_graph(deps)` binds the run's dependencies to the nodes; compile it with a
checkpointer (agent.checkpointer) so a killed run resumes from its thread id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from langgraph.graph import END, START, StateGraph

from agent.deps import AgentDeps
from agent.nodes.analyze import analyze
from agent.nodes.conclude import conclude
from agent.nodes.design import design
from agent.nodes.hypothesize import hypothesize
from agent.nodes.observe import observe
from agent.nodes.outputs import outputs
from agent.nodes.route import next_node, route
from agent.nodes.run import run
from agent.state import AgentState

Node = Callable[[AgentState, AgentDeps], Awaitable[dict[str, Any]]]
NODES: dict[str, Node] = {
    "observe": observe,
    "hypothesize": hypothesize,
    "design": design,
    "run": run,
    "analyze": analyze,
    "route": route,
    "outputs": outputs,
    "conclude": conclude,
}


class BoundNode(Protocol):
    def __call__(self, state: AgentState) -> Awaitable[dict[str, Any]]: ...


def _bound(node: Node, deps: AgentDeps) -> BoundNode:
    async def bound(state: AgentState) -> dict[str, Any]:
        return await node(state, deps)

    bound.__name__ = node.__name__
    return bound


def build_graph(deps: AgentDeps) -> StateGraph[AgentState, Any, AgentState, AgentState]:
    graph = StateGraph(AgentState)
    for name, node in NODES.items():
        graph.add_node(name, _bound(node, deps))
    graph.add_edge(START, "observe")
    graph.add_edge("observe", "hypothesize")
    graph.add_edge("hypothesize", "design")
    graph.add_edge("design", "run")
    graph.add_edge("run", "analyze")
    graph.add_edge("analyze", "route")
    graph.add_conditional_edges("route", next_node, {"design": "design", "conclude": "outputs"})
    graph.add_edge("outputs", "conclude")
    graph.add_edge("conclude", END)
    return graph

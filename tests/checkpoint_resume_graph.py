"""A three-node graph whose node_2 SIGKILLs its own process the first time it runs, for
the resume test. Run as
`python -m tests.checkpoint_resume_graph URL THREAD LOG MARKER MODE PHASE`: MODE `sync` or
`async` (which saver and invoke), PHASE `start`, or `resume` to invoke with None input.
Prints the final state as JSON when the graph completes."""

from __future__ import annotations

import asyncio
import json
import operator
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from agent.checkpointer import DURABILITY, async_redis_checkpointer, redis_checkpointer

NODES = ("node_1", "node_2", "node_3")


class ResumeState(TypedDict):
    visited: Annotated[list[str], operator.add]
    log_path: str
    marker_path: str


class LoggingNode:
    """Appends its name to the state and to the log file; node_2 dies on its first run."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, state: ResumeState) -> dict[str, Any]:
        # Logged before anything else, so a killed attempt still counts as a run.
        with open(state["log_path"], "a") as log:
            log.write(self.name + "\n")
        marker = Path(state["marker_path"])
        if self.name == "node_2" and not marker.exists():
            marker.touch()  # die only once
            os.kill(os.getpid(), signal.SIGKILL)
        return {"visited": [self.name]}


def build_graph() -> StateGraph[ResumeState]:
    graph = StateGraph(ResumeState)
    for name in NODES:
        graph.add_node(name, LoggingNode(name))
    graph.add_edge(START, NODES[0])
    graph.add_edge(NODES[0], NODES[1])
    graph.add_edge(NODES[1], NODES[2])
    graph.add_edge(NODES[2], END)
    return graph


def main(url: str, thread_id: str, log_path: str, marker_path: str, mode: str, phase: str) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    start: ResumeState = {"visited": [], "log_path": log_path, "marker_path": marker_path}
    graph_input = start if phase == "start" else None  # None resumes from the checkpoint
    if mode == "sync":
        with redis_checkpointer(url) as saver:
            graph = build_graph().compile(checkpointer=saver)
            final = graph.invoke(graph_input, config, durability=DURABILITY)
    else:
        final = asyncio.run(_main_async(url, config, graph_input))
    print(json.dumps(final))


async def _main_async(
    url: str, config: RunnableConfig, graph_input: ResumeState | None
) -> dict[str, Any]:
    async with async_redis_checkpointer(url) as saver:
        graph = build_graph().compile(checkpointer=saver)
        return await graph.ainvoke(graph_input, config, durability=DURABILITY)


if __name__ == "__main__":
    main(*sys.argv[1:7])

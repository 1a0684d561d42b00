"""The live terminal view of an agent run: hypotheses with their statuses and the latest
experiments with token heat."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from agent.state import AgentState, Experiment, Status
from cli.feature_view import heat_style

STATUS_STYLE = {
    Status.OPEN: "yellow",
    Status.CONFIRMED: "bold green",
    Status.REFUTED: "red",
    Status.REFINED: "cyan",
}
EXPERIMENTS_SHOWN = 8


def render_run(state: AgentState, name: str) -> RenderableType:
    cost = state.cost
    header = Text.assemble(
        (f"feature {name}", "bold"),
        f" · round {state.round}/{state.budget.max_rounds}",
        f" · probe texts {cost.probe_texts}/{state.budget.max_probe_texts}",
        f" · threshold {state.threshold:.3g}",
    )
    hypotheses = Table(title="hypotheses", expand=True, title_justify="left")
    hypotheses.add_column("id", style="dim", width=4)
    hypotheses.add_column("status", width=10)
    hypotheses.add_column("statement", ratio=1)
    hypotheses.add_column("decided by", style="dim")
    for h in state.hypotheses:
        control = " (negative control)" if h.negative_control else ""
        hypotheses.add_row(  # Text, not str: statements hold brackets like [a-z]
            h.id,
            Text(h.status.value, style=STATUS_STYLE[h.status]),
            Text(h.statement + control),
            ", ".join(h.decided_by),
        )
    experiments = Table(title="latest experiments", expand=True, title_justify="left")
    experiments.add_column("id", style="dim", width=4)
    experiments.add_column("tests", width=5)
    experiments.add_column("expect", width=6)
    experiments.add_column("max", justify="right", width=6)
    experiments.add_column("text (token heat)", ratio=1)
    scale = max((e.outcome.max_act for e in state.experiments if e.outcome), default=0.0)
    for e in state.experiments[-EXPERIMENTS_SHOWN:]:
        verdict = "" if e.agrees is None else ("✓" if e.agrees else "✗")
        shown = f"{e.outcome.max_act:.3g}{verdict}" if e.outcome else "…"
        experiments.add_row(e.id, e.hypothesis, e.expect.value, shown, heat_text(e, scale))
    parts: list[RenderableType] = [header, hypotheses, experiments]
    if state.explanation is not None:
        ex = state.explanation
        parts.append(
            Text.assemble(
                ("explanation: ", "bold"),
                ex.text,
                f"  (confidence {ex.confidence:.2f}, {ex.stopped_by})",
            )
        )
    return Group(*parts)


def heat_text(experiment: Experiment, scale: float) -> Text:
    outcome = experiment.outcome
    if outcome is None:
        return Text(experiment.text.replace("\n", "⏎"))
    line = Text()
    for i, (token, act) in enumerate(zip(outcome.tokens, outcome.acts, strict=True)):
        style = heat_style(act, scale, i == outcome.peak_index)
        line.append(token.replace("\n", "⏎"), style=style)
    return line

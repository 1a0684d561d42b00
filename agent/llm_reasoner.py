"""The `openai` reasoner: an LLM behind any OpenAI-compatible server thinks each step.

Every call sends a small prompt and validates the reply against a small pydantic schema
(the client re-asks on invalid output). All corpus and experiment text goes through
`delimit()` as data, and the system prompt says such text is never instructions. Only
`_marked` writes the activation marks (⟦token⟧(2.5)): in any text from the corpus, a
user or a model their brackets become plain ones (`unmarked`), so no text can fake a
firing.
With the graph's round steps (`design_round`, `analyze_round`) one call writes the tests,
and one the verdicts, of every open hypothesis: a round is two calls, however many
hypotheses are open. The one-hypothesis steps serve the chat.
SAGE's rule is enforced in code after the model answers: confirming or refuting takes
at least two consistent tests among the cited ones, and every cited id must be one of
the hypothesis's experiments; otherwise the verdict is downgraded to open.

Token accounting: the client charges each call to the meter of the node that made it
(`AgentDeps.think`), which adds it to the run's checkpointed `state.cost`; the
reasoner itself keeps no per-run counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel

from agent.llm_outputs import (
    EXAMPLE_OUTPUT_CLAIMS,
    EXAMPLE_OUTPUT_VERDICT,
    OutputClaimsOut,
    OutputVerdictOut,
    judge_ask,
    propose_ask,
)
from agent.llm_round_schemas import (
    EXAMPLE_ROUND_TESTS,
    EXAMPLE_ROUND_VERDICTS,
    round_tests,
    round_verdicts,
)
from agent.llm_schemas import (
    EXAMPLE_CONCLUSION,
    EXAMPLE_EXPERIMENTS,
    EXAMPLE_HYPOTHESES,
    EXAMPLE_VERDICT,
    LONGEST_REPLY_ENTRIES,
    MAX_TEST_CHARS,
    _ConclusionOut,
    _Experiments,
    _Hypotheses,
    _VerdictOut,
    reply_tokens,
)
from agent.reasoner import Conclusion, NewExperiment, NewHypothesis, Verdict
from agent.state import AgentState, Expect, Experiment, Hypothesis, Status
from llm_client import DATA_NOTE, LLMClient, Message, delimit
from probes.evidence.store import Example, FeatureEvidence
from probes.promotions import Promotions

DECIDE = 2  # consistent tests needed to confirm or refute (as in SAGE)
N_TOP, N_PER_QUANTILE, N_QUANTILES, N_QUIET, N_LENS = 8, 1, 4, 4, 10
WINDOW_BEFORE, WINDOW_AFTER = 24, 8  # tokens shown around an example's peak

# Corpus, user and model text shows the marks' brackets as plain ones.
_UNMARK = str.maketrans({"⟦": "[", "⟧": "]"})
_MARK = re.compile(r"⟦([^⟦⟧]*)⟧(?:\(-?\d+(?:\.\d+)?\))?")  # ⟦token⟧(2.5), as _marked writes

T = TypeVar("T", bound=BaseModel)
T_ = TypeVar("T_")

SYSTEM = (
    "You are an interpretability researcher explaining one feature of a sparse "
    "autoencoder trained on a language model, by forming hypotheses and testing them "
    "with short experiments. In examples, a token wrapped as ⟦token⟧(2.5) is where the "
    f"feature fired, with its activation. {DATA_NOTE}"
)


def reply_like(reply: BaseModel, decoded_under_schema: bool = False) -> str:
    """How to reply. A worked example shows a small model the shape of the reply, but it
    is also what such a model copies: where the server decodes under the schema, the
    grammar gives the shape and no example is shown."""
    if decoded_under_schema:
        return "Reply with JSON only, in the schema given."
    return (
        f"Reply with JSON only, like this reply about a colour feature:\n{reply.model_dump_json()}"
    )


class LLMReasoner:
    """The Reasoner protocol over an `LLMClient` (shared by concurrent runs)."""

    def __init__(self, client: LLMClient, name: str = "openai") -> None:
        self.client = client
        self.name = name

    async def aclose(self) -> None:
        await self.client.aclose()

    async def hypothesize(
        self, state: AgentState, evidence: FeatureEvidence
    ) -> list[NewHypothesis]:
        ask = (
            f"{render_evidence(evidence)}\n\nPropose at least 3 distinct hypotheses about "
            "what this feature responds to: 2 to 5 in hypotheses, and one negative control "
            "(negative_control): a plausible but likely wrong reading that the experiments "
            "should refute. Each says what should activate it (fires_on) and what should "
            "not (not_on): what the feature reads in the text (what it does to the model's "
            "output is tested afterwards, by steering). "
            f"{self._reply_like(EXAMPLE_HYPOTHESES)}"
        )
        most = self._tokens_for(LONGEST_REPLY_ENTRIES)
        out = await self._ask(state, ask, _Hypotheses, "hypothesize", most)
        # Probe runs test what the feature reads: its output side has its own step.
        return [
            *(NewHypothesis(**h.model_dump() | {"side": "input"}) for h in out.hypotheses),
            NewHypothesis(
                **out.negative_control.model_dump() | {"side": "input"}, negative_control=True
            ),
        ]

    async def output_hypotheses(
        self, state: AgentState, evidence: FeatureEvidence, seen: Promotions
    ) -> list[NewHypothesis]:
        ask = propose_ask(evidence, seen, self._reply_like(EXAMPLE_OUTPUT_CLAIMS))
        out = await self._ask(state, ask, OutputClaimsOut, "output-hypothesize")
        return [
            NewHypothesis(
                statement=without_marks(claim),
                fires_on="the next tokens it names",
                not_on="the other tokens the model finds likely there",
                side="output",
            )
            for claim in dict.fromkeys(out.claims)
        ]

    async def judge_output(
        self, state: AgentState, hypothesis: Hypothesis, tested: Promotions, test: str
    ) -> Verdict:
        ask = judge_ask(
            hypothesis.statement, tested, test, self._reply_like(EXAMPLE_OUTPUT_VERDICT)
        )
        out = await self._ask(state, ask, OutputVerdictOut, "output-analyze")
        return Verdict(
            status=Status.CONFIRMED if out.holds else Status.REFUTED,
            reason=without_marks(out.reason),
            cites=[test],
        )

    async def design(
        self, state: AgentState, hypothesis: Hypothesis, evidence: FeatureEvidence
    ) -> list[NewExperiment]:
        earlier = render_experiments(state.tests_of(hypothesis.id), state.threshold)
        ask = (
            f"Hypothesis {hypothesis.id}:\n{render_hypothesis(hypothesis)}\n\n"
            f"Its experiments so far:\n{earlier or '(none)'}\n\n"
            f"Write new short test texts (at most {MAX_TEST_CHARS} characters each) that "
            "would tell whether the hypothesis holds: 1 to 3 in high, where it says the "
            "feature fires (expected_peak: the token it should peak on), and 1 to 3 in low, "
            f"where it says it does not. {self._reply_like(EXAMPLE_EXPERIMENTS)}"
        )
        out = await self._ask(state, ask, _Experiments, "design")
        return _new_experiments(out)

    async def analyze(
        self, state: AgentState, hypothesis: Hypothesis, evidence: FeatureEvidence
    ) -> Verdict:
        tests = [e for e in state.tests_of(hypothesis.id) if e.outcome is not None]
        ask = (
            f"Hypothesis {hypothesis.id}:\n{render_hypothesis(hypothesis)}\n\n"
            f"Its experiments (fired means max activation >= {state.threshold:.2f}):\n"
            f"{render_experiments(tests, state.threshold) or '(none)'}\n\n"
            "Give a verdict: 'confirmed' or 'refuted' (each needs at least 2 consistent "
            "experiments), 'refined' (with refined_statement: a better wording to test "
            "next) or 'open' (not enough evidence yet). Cite the ids of the experiments "
            f"that decided it. {self._reply_like(EXAMPLE_VERDICT)}"
        )
        out = await self._ask(state, ask, _VerdictOut, "analyze")
        return checked_verdict(out, tests)

    async def design_round(
        self, state: AgentState, targets: list[Hypothesis], evidence: FeatureEvidence
    ) -> dict[str, list[NewExperiment]]:
        ids = tuple(h.id for h in targets)
        listed = "\n\n".join(
            f"Hypothesis {h.id}:\n{render_hypothesis(h)}\nIts experiments so far:\n"
            f"{render_experiments(state.tests_of(h.id), state.threshold) or '(none)'}"
            for h in targets
        )
        ask = (
            f"{listed}\n\nFor each hypothesis ({', '.join(ids)}), write new short test texts "
            f"(at most {MAX_TEST_CHARS} characters each) that would tell whether it holds: "
            "1 to 3 in high, where it says the feature fires (expected_peak: the token it "
            "should peak on), and 1 to 3 in low, where it says it does not. One entry in "
            f"tests per hypothesis, with its id. {self._reply_like(EXAMPLE_ROUND_TESTS)}"
        )
        most = self._tokens_for(len(ids))
        out = await self._ask(state, ask, round_tests(ids), "design", most)
        return {t.hypothesis: _new_experiments(t) for t in out.tests}

    async def analyze_round(
        self, state: AgentState, targets: list[Hypothesis], evidence: FeatureEvidence
    ) -> dict[str, Verdict]:
        ids = tuple(h.id for h in targets)
        tests = {h.id: [e for e in state.tests_of(h.id) if e.outcome is not None] for h in targets}
        listed = "\n\n".join(
            f"Hypothesis {h.id}:\n{render_hypothesis(h)}\nIts experiments:\n"
            f"{render_experiments(tests[h.id], state.threshold) or '(none)'}"
            for h in targets
        )
        ask = (
            f"{listed}\n\nFired means max activation >= {state.threshold:.2f}. Give a "
            f"verdict for each hypothesis ({', '.join(ids)}): 'confirmed' or 'refuted' (each "
            "needs at least 2 consistent experiments), 'refined' (with refined_statement: a "
            "better wording to test next) or 'open' (not enough evidence yet). Cite the ids "
            "of the experiments that decided it. One entry in verdicts per hypothesis, with "
            f"its id. {self._reply_like(EXAMPLE_ROUND_VERDICTS)}"
        )
        most = self._tokens_for(len(ids))
        out = await self._ask(state, ask, round_verdicts(ids), "analyze", most)
        return {v.hypothesis: checked_verdict(v, tests[v.hypothesis]) for v in out.verdicts}

    async def conclude(self, state: AgentState, evidence: FeatureEvidence) -> Conclusion:
        summary = "\n".join(
            f"{h.id} [{h.status.value}]{' (negative control)' if h.negative_control else ''}: "
            f"{unmarked(h.statement)} (decided by {', '.join(h.decided_by) or 'nothing yet'})"
            for h in state.hypotheses
            if h.side == "input"  # the output side is stated beside the conclusion
        )
        ask = (
            f"{render_evidence(evidence)}\n\nHypotheses and their verdicts:\n{summary}\n"
            f"The testing stopped: {state.stop_reason or 'decided'}.\n\n"
            "Conclude: a one-sentence explanation of what the feature responds to; labels "
            "(short names; several when it responds to unrelated things); the ids of the "
            "experiments that support it; your confidence from 0 to 1. "
            f"{self._reply_like(EXAMPLE_CONCLUSION)}"
        )
        out = await self._ask(state, ask, _ConclusionOut, "conclude")
        known = {e.id for e in state.experiments}
        return Conclusion(
            text=without_marks(out.explanation),
            labels=[without_marks(label) for label in out.labels],
            evidence=[i for i in dict.fromkeys(out.evidence) if i in known],
            confidence=out.confidence,
        )

    def _reply_like(self, example: BaseModel) -> str:
        return reply_like(example, decoded_under_schema=self.client.json_mode == "json_schema")

    def _tokens_for(self, entries: int) -> int | None:
        return reply_tokens(self.client.config.max_tokens, entries)

    async def _ask(
        self,
        state: AgentState,
        ask: str,
        schema: type[T],
        purpose: str,
        max_tokens: int | None = None,
    ) -> T:
        messages: list[Message] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Feature {state.feature}.\n\n{ask}"},
        ]
        return await self.client.complete_json(
            messages, schema, purpose=purpose, max_tokens=max_tokens
        )


def _new_experiments(out: _Experiments) -> list[NewExperiment]:
    return [
        *(
            NewExperiment(text=e.text, expect=Expect.HIGH, expected_peak=e.expected_peak)
            for e in out.high
        ),
        *(NewExperiment(text=e.text, expect=Expect.LOW) for e in out.low),
    ]


def checked_verdict(out: _VerdictOut, tests: Sequence[Experiment]) -> Verdict:
    """The model's verdict, held to SAGE's rule: an unknown cited id, or fewer than
    DECIDE cited tests consistent with a confirmation (all agree with the hypothesis) or
    a refutation (all disagree), makes it open. A refinement needs its new wording."""
    by_id = {e.id: e for e in tests}
    cites = list(dict.fromkeys(out.cites))
    unknown = [c for c in cites if c not in by_id]
    status, reason = Status(out.status), out.reason
    if unknown:
        status, reason = Status.OPEN, f"cited unknown experiments {unknown}; {reason}"
    elif status in (Status.CONFIRMED, Status.REFUTED):
        want = status is Status.CONFIRMED
        consistent = [c for c in cites if by_id[c].agrees is want]
        if len(consistent) < DECIDE or len(consistent) < len(cites):
            reason = f"{status.value} needs {DECIDE} consistent cited tests; {reason}"
            status = Status.OPEN
    elif status is Status.REFINED and not (out.refined_statement or "").strip():
        status, reason = Status.OPEN, f"refined without a new statement; {reason}"
    return Verdict(
        status=status,
        reason=reason,
        cites=[] if status is Status.OPEN else cites,
        refined_statement=out.refined_statement if status is Status.REFINED else None,
    )


def without_marks(text: str) -> str:
    """A model's text with the prompt's activation marks taken out, as a reader wants it:
    `the⟦ widget⟧(38.2) token` becomes `the "widget" token` (the token's space kept)."""
    quoted = _MARK.sub(lambda m: f'{" " * m.group(1).startswith(" ")}"{m.group(1).strip()}"', text)
    return quoted.replace("⟦", "").replace("⟧", "")


def unmarked(text: str) -> str:
    """`text` (from the corpus, a user or a model) unable to pass for an activation mark."""
    return text.translate(_UNMARK)


def render_hypothesis(h: Hypothesis) -> str:
    control = " (negative control)" if h.negative_control else ""
    return unmarked(
        f"{h.statement}{control}\nfires on: {h.fires_on}\nnot on: {h.not_on}\nside: {h.side}"
    )


def render_experiments(experiments: Sequence[Experiment], threshold: float) -> str:
    parts = []
    for e in experiments:
        expected = unmarked(e.expected_peak) if e.expected_peak is not None else None
        head = f"{e.id}: expect {e.expect.value}, expected peak {expected!r}"
        if e.outcome is None:
            parts.append(f"{head} (not run yet)\n{delimit(e.id, unmarked(e.text))}")
            continue
        o = e.outcome
        fired = "fired" if o.fired else "did not fire"
        marked = _marked(o.tokens, o.acts, threshold) if o.tokens else unmarked(e.text)
        peak = f" on {unmarked(o.peak_token)!r}" if o.peak_token is not None else ""
        parts.append(
            f"{head}; result: max {o.max_act:.2f}{peak}, {fired}, "
            f"{'agrees' if e.agrees else 'disagrees'}\n{delimit(e.id, marked)}"
        )
    return "\n".join(parts)


def render_evidence(evidence: FeatureEvidence) -> str:
    """The evidence, compactly: top contexts, quantile samples and non-activating
    contexts (each a delimited block), the logit lens and similar features."""
    s = evidence.stats
    lines = [f"Fires on {s.density:.4%} of tokens; max activation {s.max_act:.2f}.", ""]
    lines.append("Top activating contexts:")
    lines += [render_example(f"top_{i + 1}", e) for i, e in enumerate(evidence.top[:N_TOP])]
    bins = spread(evidence.quantiles, N_QUANTILES)
    if bins:
        lines.append("Samples from activation quantiles (weakest first):")
    for b in bins:
        for j, e in enumerate(b.examples[:N_PER_QUANTILE]):
            lines.append(render_example(f"quantile_{b.index}_{j + 1}", e))
    if evidence.non_activating:
        lines.append("Contexts where it does not fire:")
    for i, e in enumerate(evidence.non_activating[:N_QUIET]):
        quiet = unmarked(_window(e.tokens, 0, WINDOW_BEFORE + WINDOW_AFTER))
        lines.append(delimit(f"quiet_{i + 1}", quiet))
    for side in ("promoted", "suppressed"):
        tokens = getattr(evidence, side)
        if tokens:
            listed = ", ".join(repr(unmarked(t.token)) for t in tokens[:N_LENS])
            lines.append(f"Logit lens, tokens it {side}:\n{delimit(side, listed)}")
    if evidence.similar:
        near = ", ".join(f"{n.feature} ({n.cosine:.2f})" for n in evidence.similar[:5])
        lines.append(f"Most similar features (decoder cosine): {near}")
    return "\n".join(lines)


def spread(bins: Sequence[T_], n: int) -> list[T_]:
    """Up to `n` items spread evenly from first to last."""
    if len(bins) <= n:
        return list(bins)
    picks = sorted({round(i * (len(bins) - 1) / (n - 1)) for i in range(n)})
    return [bins[i] for i in picks]


def render_example(label: str, e: Example) -> str:
    threshold = 0.5 * e.max_act if e.max_act > 0 else float("inf")
    # The example's left context (no activations) shows when the peak is near its start.
    acts = [0.0] * len(e.before) + e.acts
    marked = _marked(e.before + e.tokens, acts, threshold)
    return f"{label} (max {e.max_act:.2f}):\n{delimit(label, marked)}"


def _marked(tokens: Sequence[str], acts: Sequence[float], threshold: float) -> str:
    """Tokens around the peak, with each token at or above `threshold` (and the peak)
    wrapped as ⟦token⟧(act): the only marks in a prompt (the tokens' own are unmarked)."""
    peak = max(range(len(acts)), key=lambda i: (acts[i], -i)) if acts else 0
    plain = [unmarked(t) for t in tokens]
    marked = [
        f"⟦{t}⟧({a:.1f})" if a > 0 and (i == peak or a >= threshold) else t
        for i, (t, a) in enumerate(zip(plain, acts, strict=False))
    ]
    marked += plain[len(marked) :]
    return _window(marked, max(0, peak - WINDOW_BEFORE), peak + WINDOW_AFTER + 1)


def _window(tokens: Sequence[str], start: int, end: int) -> str:
    head = "…" if start > 0 else ""
    tail = "…" if end < len(tokens) else ""
    return head + "".join(tokens[start:end]) + tail

"""The agent's answers, in words. Every number here comes from a probe run or from the
stored evidence and explanation; nothing is made up."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from agent.chat.models import ChatExperiment, ChatVerdict
from agent.explanations import ExplanationRecord
from agent.state import Expect
from probes.evidence.store import Example, FeatureEvidence

if TYPE_CHECKING:
    from probes.steering import Steering, SteeringResult, TokenShift

TOP_TOKENS = 5
STEERING_PROMPTS = 2  # top contexts to steer on when the user gives no text
NO_EFFECT_KL = 0.01  # nats: below this the steered and clean predictions read the same
SHOWN_CHARS = 80
WINDOW = 12  # tokens shown each side of an example's peak


def threshold_line(feature: int, tau: float) -> str:
    if tau <= 0:
        return (
            f"Feature {feature} never fired on the evidence corpus, so no text counts as "
            "firing; the activations below are raw."
        )
    return (
        f"Feature {feature} counts as firing at an activation of {tau:.2f} or more "
        "(half the mean peak of its top-10 examples)."
    )


def experiment_line(e: ChatExperiment) -> str:
    o = e.outcome
    where = (
        f"peak {o.max_act:.2f} on {o.peak_token!r}" if o.peak_token is not None else "no activation"
    )
    line = f'- {e.id} "{_short(e.text)}": {"fires" if o.fired else "does not fire"} ({where})'
    if e.expect is not None:
        wanted = {Expect.HIGH: "fire", Expect.WEAK: "fire, at least faintly"}.get(
            e.expect, "stay quiet"
        )
        line += f"; expected to {wanted}: {'agrees' if e.agrees else 'disagrees'}"
    return line


def tests_answer(feature: int, experiments: list[ChatExperiment], tau: float) -> str:
    fired = sum(e.outcome.fired for e in experiments)
    lines = [threshold_line(feature, tau), *map(experiment_line, experiments)]
    lines.append(f"{fired} of {len(experiments)} text{'s' if len(experiments) > 1 else ''} fired.")
    return "\n".join(lines)


def verdict_answer(
    feature: int, verdict: ChatVerdict, experiments: list[ChatExperiment], tau: float
) -> str:
    said = {
        "confirmed": "holds",
        "refuted": "does not hold",
        "undecided": "is undecided: the experiments did not settle it",
    }[verdict.status]
    lines = [
        f"Your hypothesis, that feature {feature} fires on {verdict.hypothesis}, {said} "
        f"({verdict.reason}).",
        f"What I tested: {verdict.tested}.",
        threshold_line(feature, tau),
        *map(experiment_line, experiments),
    ]
    if verdict.cites:
        lines.append(f"Deciding experiments: {', '.join(verdict.cites)}.")
    if verdict.suggestion:
        lines.append(f"The evidence fits this better: {verdict.suggestion}")
    return "\n".join(lines)


def question_answer(
    feature: int,
    record: ExplanationRecord | None,
    evidence: FeatureEvidence,
    tau: float,
    experiments: list[ChatExperiment],
) -> str:
    """What is known about the feature: its current explanation (if any), then its
    evidence; then the runs of any texts the question quoted."""
    lines = []
    if record is None:
        lines.append(
            f"Feature {feature} has no stored explanation yet (`glossator explain {feature}` "
            "makes one). Here is what its evidence shows."
        )
    else:
        x = record.explanation
        score = f", scored {record.score:g} by {record.scorer}" if record.score is not None else ""
        lines.append(
            f"The current explanation of feature {feature}: {x.text} (by the {record.explainer} "
            f"explainer, confidence {x.confidence:.2f}{score})."
        )
        if len(x.labels) > 1:
            lines.append(f"Its senses: {'; '.join(x.labels)}.")
    lines += evidence_lines(evidence)
    if experiments:
        lines.append(threshold_line(feature, tau))
        lines += map(experiment_line, experiments)
    lines.append(
        "To test something yourself, send a text in double quotes, or a hypothesis "
        '("does it fire on ...?").'
    )
    return "\n".join(lines)


def evidence_lines(evidence: FeatureEvidence) -> list[str]:
    if not evidence.top:
        return ["It never fired on the evidence corpus."]
    s = evidence.stats
    peaks: Counter[str] = Counter()
    best: dict[str, float] = {}
    for e in evidence.top:
        token = e.tokens[e.peak]
        peaks[token] += 1
        best[token] = max(best.get(token, 0.0), e.max_act)
    listed = ", ".join(
        f"{t!r} (max {best[t]:.2f}, peak of {n})" for t, n in peaks.most_common(TOP_TOKENS)
    )
    lines = [
        f"It fires on {s.density:.3%} of the tokens read (max activation {s.max_act:.2f}).",
        f"Its top {len(evidence.top)} examples peak on: {listed}.",
        f"Its strongest example: {_marked(evidence.top[0])}",
    ]
    if evidence.promoted:
        promoted = ", ".join(repr(t.token) for t in evidence.promoted[:TOP_TOKENS])
        lines.append(f"Where it fires, it makes the model more likely to say: {promoted}.")
    return lines


def _marked(example: Example) -> str:
    """The example around its peak, the peak token in brackets."""
    i = example.peak
    start, end = max(0, i - WINDOW), i + WINDOW + 1
    tokens = example.tokens
    text = "".join(tokens[start:i]) + f"[{tokens[i]}]" + "".join(tokens[i + 1 : end])
    return ("…" if start else "") + " ".join(text.split()) + ("…" if end < len(tokens) else "")


def _short(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= SHOWN_CHARS else one_line[: SHOWN_CHARS - 1] + "…"


def steering_prompts(evidence: FeatureEvidence) -> list[str]:
    """Texts to steer on: the feature's top contexts, cut right after their peak (where
    it acts), each one once; a plain opening when it never fired."""
    prompts = ["".join(example.tokens[: example.peak + 1]).strip() for example in evidence.top]
    unique = [p for p in dict.fromkeys(prompts) if p][:STEERING_PROMPTS]
    return unique or ["The"]


def steer_answer(
    feature: int, times: float, steering: Steering, results: list[SteeringResult]
) -> str:
    """What the model said with the feature clamped, against what it says without."""
    how = (
        "turned off (clamped to 0)"
        if times == 0
        else (f"clamped to {times:g} times its largest activation ({steering.clamp:.2f})")
    )
    lines = [f"With feature {feature} {how} at every token:"]
    promoted: Counter[str] = Counter()
    for r in results:
        lines.append(
            f'- "{_short(r.text)}" goes on "{_short(r.clean_continuation)}" without it and '
            f'"{_short(r.steered_continuation)}" with it (KL {r.kl_last:.2f} nats on the '
            f"next token); it promotes {_tokens(r.promoted)} and demotes {_tokens(r.demoted)}."
        )
        promoted.update(s.token for s in r.promoted)
    shared = [t for t, n in promoted.most_common() if n == len(results) and len(results) > 1]
    if shared:
        lines.append(f"On every text it promotes {_tokens_text(shared)}.")
    if max(r.kl_last for r in results) < NO_EFFECT_KL:
        lines.append("The next-token predictions barely moved: no clear output effect here.")
    return "\n".join(lines)


def _tokens(shifts: list[TokenShift]) -> str:
    return _tokens_text([s.token for s in shifts]) if shifts else "nothing in particular"


def _tokens_text(tokens: list[str]) -> str:
    return ", ".join(repr(t) for t in tokens[:TOP_TOKENS])

"""The chat agent: one turn reads the user's message, runs what it asks for through the
feature (tests, a hypothesis's experiments) and answers, streaming events as it goes.

A turn that fails after the user's message is stored still stores an agent message
(`failed=True`) saying what failed, with any experiments that did run; nothing stored
before is ever changed. Errors found before anything is stored (bad message, unknown
thread or feature) are raised by `respond` itself, so a caller can refuse the request
before it starts streaming. A turn cancelled midway (the client left) keeps the user's
message without a reply. Two turns on one thread at once both complete; each reply
names the message it answers (`reply_to`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agent.chat import replies
from agent.chat.intent import Request, check_message, understand
from agent.chat.models import (
    AnswerEvent,
    ChatEvent,
    ChatExperiment,
    ChatMessage,
    ChatStoreError,
    ChatThread,
    ChatVerdict,
    DoneEvent,
    ErrorEvent,
    ExperimentEvent,
    Intent,
    UnderstoodEvent,
    UnknownFeatureError,
    UnknownThreadError,
    VerdictEvent,
)
from agent.chat.store import ChatStore
from agent.deps import AgentDeps
from agent.explanations import ExplanationStore
from agent.reasoner import NewExperiment, Verdict
from agent.state import AgentState, Cost, Expect, Experiment, Hypothesis, Outcome, Status
from identifiers.features import unknown_feature
from llm_client import delimit
from predicates.language import WordIn, as_dict
from probes.evidence.store import FeatureEvidence
from probes.evidence.threshold import firing_threshold
from probes.probe_runner import ProbeResult

logger = logging.getLogger(__name__)

MAX_ROUNDS = 2  # design -> run -> analyze rounds per hypothesis, until it is decided
MAX_EXPERIMENTS = 12  # probe texts per hypothesis turn
STEER_TOKENS = 12  # greedy tokens each steered text continues for
# Carrier sentences for a hypothesis's words when the reasoner found no text with them
# (the rules reasoner retrieves from the corpus, which may lack a rare word); each is
# also run with NEUTRAL in place of the word, as its control.
CARRIERS = ("They talked about {} all evening.", "Her letter mentioned {} twice.")
NEUTRAL = "the weather"


@dataclass
class _Draft:
    """The agent's reply, filled in as the turn goes."""

    request: Request
    text: str = ""
    threshold: float | None = None
    experiments: list[ChatExperiment] = field(default_factory=list)
    verdict: ChatVerdict | None = None
    cost: Cost = field(default_factory=Cost)

    def message(self, asked: ChatMessage, failed: bool = False) -> ChatMessage:
        return ChatMessage(
            role="agent",
            text=self.text,
            reply_to=asked.id,
            intent=self.request.intent,
            threshold=self.threshold,
            experiments=self.experiments,
            verdict=self.verdict,
            failed=failed,
            cost=self.cost,
        )


class ChatAgent:
    """Answers chat messages about features with the run's dependencies (reasoner, probe
    runner, evidence), shared with any agent runs in the same process."""

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps

    def check_feature(self, feature: int) -> None:
        if problem := unknown_feature([feature], self.deps.store.n_features):
            raise UnknownFeatureError(problem)

    def start_thread(
        self,
        store: ChatStore,
        feature: int,
        title: str = "",
        owner: str | None = None,
        thread_id: str | None = None,
    ) -> ChatThread:
        """A new thread about a feature that exists (see `ChatStore.create`)."""
        self.check_feature(feature)
        return store.create(feature, title, owner, thread_id)

    async def respond(
        self, store: ChatStore, thread_id: str, feature: int, user_text: str
    ) -> AsyncIterator[ChatEvent]:
        """Check the message, store it, and return the turn's events (iterate them to
        run the turn and store the reply). Raises ChatInputError, UnknownThreadError,
        UnknownFeatureError or ChatStoreError before anything is stored."""
        text = check_message(user_text)
        self.check_feature(feature)
        thread = store.thread(thread_id)
        if thread.feature != feature:
            raise UnknownThreadError(f"chat thread {thread_id} is about feature {thread.feature}")
        request = understand(text)
        asked = ChatMessage(role="user", text=text)
        store.append(thread.id, asked)
        return self._turn(store, thread, asked, request)

    async def _turn(
        self, store: ChatStore, thread: ChatThread, asked: ChatMessage, request: Request
    ) -> AsyncIterator[ChatEvent]:
        yield UnderstoodEvent(
            message_id=asked.id, intent=request.intent, plan=_plan(request), texts=request.texts
        )
        draft = _Draft(request)
        try:
            if request.intent is Intent.STEER:  # no steps to show: the answer says it all
                await self._steer(thread, draft)
            else:
                work = {Intent.TEST: self._test, Intent.HYPOTHESIS: self._hypothesis}
                async for event in work.get(request.intent, self._question)(store, thread, draft):
                    yield event
        except Exception as error:  # reported and stored as the reply: the thread goes on
            logger.exception("chat turn on thread %s failed", thread.id)
            reason = str(error) or type(error).__name__
            draft.text = f"I could not finish this: {reason}"
            note = draft.message(asked, failed=True)
            try:
                store.append(thread.id, note)
            except ChatStoreError:  # Redis itself failed: the event still says why
                yield ErrorEvent(error=reason, message=None)
                return
            yield ErrorEvent(error=reason, message=note)
            return
        yield AnswerEvent(text=draft.text)
        reply = draft.message(asked)
        try:
            store.append(thread.id, reply)
        except ChatStoreError as error:
            yield ErrorEvent(error=str(error), message=None)
            return
        yield DoneEvent(message=reply)

    async def _test(
        self, store: ChatStore, thread: ChatThread, draft: _Draft
    ) -> AsyncIterator[ChatEvent]:
        tau = self._threshold(thread.feature, draft)
        async for event in self._run(thread.feature, draft.request.texts, tau, draft):
            yield event
        draft.text = replies.tests_answer(thread.feature, draft.experiments, tau)

    async def _question(
        self, store: ChatStore, thread: ChatThread, draft: _Draft
    ) -> AsyncIterator[ChatEvent]:
        feature = thread.feature
        tau = self._threshold(feature, draft)
        record = ExplanationStore(store.client, store.subject).current(feature)
        if draft.request.texts:
            async for event in self._run(feature, draft.request.texts, tau, draft):
                yield event
        draft.text = replies.question_answer(
            feature, record, self.deps.evidence(feature), tau, draft.experiments
        )

    async def _steer(self, thread: ChatThread, draft: _Draft) -> None:
        """The feature clamped to a multiple of its largest activation, on the user's texts
        (else on its top contexts, cut after their peak): what the model then says."""
        from probes.steering_shift import steering_of

        feature, request = thread.feature, draft.request
        evidence = self.deps.evidence(feature)
        texts = request.texts or replies.steering_prompts(evidence)
        steering = steering_of(feature, times=request.times, max_act=evidence.stats.max_act)
        results = await self.deps.probe.steer(
            texts, steering, continuation_tokens=STEER_TOKENS, top_tokens=replies.TOP_TOKENS
        )
        # Each text runs twice (clean and steered) and continues for STEER_TOKENS tokens.
        spent = draft.cost.probe_texts + 2 * len(texts)
        draft.cost = draft.cost.model_copy(update={"probe_texts": spent})
        draft.text = replies.steer_answer(feature, request.times, steering, results)

    async def _run(
        self, feature: int, texts: list[str], tau: float, draft: _Draft
    ) -> AsyncIterator[ChatEvent]:
        results = await self.deps.probe.run(texts, feature)
        draft.cost = draft.cost.model_copy(
            update={"probe_texts": draft.cost.probe_texts + len(texts)}
        )
        for result in results:
            e = ChatExperiment(
                id=f"E{len(draft.experiments) + 1}", text=result.text, outcome=_outcome(result, tau)
            )
            draft.experiments.append(e)
            yield ExperimentEvent(experiment=e, threshold=tau)

    async def _hypothesis(
        self, store: ChatStore, thread: ChatThread, draft: _Draft
    ) -> AsyncIterator[ChatEvent]:
        """The reasoner designs experiments for the user's hypothesis, they run, and the
        reasoner judges them (up to MAX_ROUNDS rounds while undecided)."""
        feature, request = thread.feature, draft.request
        evidence = self.deps.evidence(feature)
        tau = self._threshold(feature, draft)
        hypothesis = _user_hypothesis(request)
        state = AgentState(feature=feature, threshold=tau, hypotheses=[hypothesis])
        verdict: Verdict | None = None
        while state.round < MAX_ROUNDS:
            new, cost = await self._design(state, hypothesis, evidence, request.words)
            if not new:
                break
            results = await self.deps.probe.run([e.text for e in new], feature)
            ran = [
                e.model_copy(update={"outcome": _outcome(r, tau)})
                for e, r in zip(new, results, strict=True)
            ]
            state = state.model_copy(
                update={
                    "experiments": [*state.experiments, *ran],
                    "round": state.round + 1,
                    "testing": hypothesis.id,
                    "cost": cost.model_copy(update={"probe_texts": cost.probe_texts + len(ran)}),
                }
            )
            for e in ran:
                assert e.outcome is not None
                shown = ChatExperiment(
                    id=e.id, text=e.text, outcome=e.outcome, expect=e.expect, agrees=e.agrees
                )
                draft.experiments.append(shown)
                yield ExperimentEvent(experiment=shown, threshold=tau)
            analyze = self.deps.reasoner.analyze(state, hypothesis, evidence)
            judged, cost = await self.deps.think(state, analyze)
            state, verdict = state.model_copy(update={"cost": cost}), judged
            if judged.status is not Status.OPEN:
                break
        draft.cost = state.cost
        if self.deps.reasoner.name == "rules":
            words = WordIn(words=tuple(request.words)).describe()
            tested = f"texts with {words} (or its inflections) against texts without them"
        else:
            tested = f"experiments the {self.deps.reasoner.name} reasoner designed"
        draft.verdict = _chat_verdict(request.hypothesis, tested, verdict)
        yield VerdictEvent(verdict=draft.verdict)
        draft.text = replies.verdict_answer(feature, draft.verdict, draft.experiments, tau)

    async def _design(
        self,
        state: AgentState,
        hypothesis: Hypothesis,
        evidence: FeatureEvidence,
        words: list[str],
    ) -> tuple[list[Experiment], Cost]:
        """The reasoner's new experiments (carrier sentences added when it found no text
        expected to fire), within MAX_EXPERIMENTS, and the cost with its LLM usage."""
        design = self.deps.reasoner.design(state, hypothesis, evidence)
        proposed, cost = await self.deps.think(state, design)
        used = {e.text for e in state.experiments}
        proposed = [p for p in proposed if p.text not in used]
        if not any(p.expect is Expect.HIGH for p in proposed):
            proposed += _carriers(words, used)
        room = max(MAX_EXPERIMENTS - len(state.experiments), 0)
        start = len(state.experiments)
        new = [
            Experiment(id=f"E{start + i + 1}", hypothesis=hypothesis.id, **p.model_dump())
            for i, p in enumerate(proposed[:room])
        ]
        return new, cost

    def _threshold(self, feature: int, draft: _Draft) -> float:
        draft.threshold = firing_threshold(self.deps.evidence(feature))
        return draft.threshold


def _plan(request: Request) -> str:
    if request.intent is Intent.TEST:
        n = len(request.texts)
        return f"run {n} text{'s' if n > 1 else ''} through the feature and report where it fires"
    if request.intent is Intent.HYPOTHESIS:
        return (
            f"test the hypothesis that it fires on {request.hypothesis}: design experiments "
            "with and without it, run them, and judge"
        )
    if request.intent is Intent.STEER:
        on = "your texts" if request.texts else "texts from its top contexts"
        return (
            f"clamp it to {request.times:g} times its largest activation on {on}, and "
            "compare what the model says next with and without it"
        )
    also = ", and run the quoted texts" if request.texts else ""
    return f"answer from the feature's stored explanation and evidence{also}"


def _user_hypothesis(request: Request) -> Hypothesis:
    """The user's hypothesis, with a predicate (its words, as whole words) so the rules
    reasoner can retrieve texts with and without them; an LLM reasoner reads the
    statement, where the user's words are delimited as data."""
    predicate = WordIn(words=tuple(form for w in request.words for form in word_forms(w)))
    return Hypothesis(
        id="H1",
        statement="Fires on what the user's hypothesis names: "
        + delimit("user_hypothesis", request.hypothesis),
        fires_on=f"text with {predicate.describe()}",
        not_on="the same kinds of text without them",
        predicate=as_dict(predicate),
    )


def word_forms(word: str) -> list[str]:
    """The word and its regular English inflections (love: loves, loved, loving, lover),
    so "does it fire on love?" counts "loving" as love, as a person would. Over-generated
    forms that are no words do no harm: no text contains them."""
    w = word.lower()
    stem = w[:-1] if w.endswith("e") else w
    forms = {w, f"{w}s", f"{w}es", f"{w}d", f"{w}ed", f"{w}er", f"{w}ers"}
    forms |= {f"{stem}ing", f"{stem}ed", f"{stem}er", f"{w}{w[-1]}ing", f"{w}{w[-1]}ed"}
    if w.endswith("y"):
        forms |= {f"{w[:-1]}ies", f"{w[:-1]}ied"}
    return sorted(forms)


def _outcome(result: ProbeResult, tau: float) -> Outcome:
    return Outcome(
        max_act=result.max_act,
        peak_token=result.tokens[result.peak] if result.peak is not None else None,
        peak_index=result.peak,
        tokens=list(result.tokens),
        acts=list(result.acts),
        fired=result.max_act >= tau > 0,
    )


def _carriers(words: list[str], used: set[str]) -> list[NewExperiment]:
    """Made-up carrier sentences with the hypothesis's words (expected to fire) and the
    same sentences without them (expected not to); their results are real probe runs."""
    out = []
    for i, carrier in enumerate(CARRIERS):
        word = words[i % len(words)]
        out.append(NewExperiment(text=carrier.format(word), expect=Expect.HIGH, expected_peak=word))
        out.append(NewExperiment(text=carrier.format(NEUTRAL), expect=Expect.LOW))
    return [e for e in out if e.text not in used]


def _chat_verdict(hypothesis: str, tested: str, verdict: Verdict | None) -> ChatVerdict:
    if verdict is None or verdict.status is Status.OPEN:
        reason = verdict.reason if verdict is not None else "no experiment could be designed"
        return ChatVerdict(
            hypothesis=hypothesis, tested=tested, status="undecided", reason=reason, cites=[]
        )
    # A refinement means the hypothesis as stated failed; its new wording is a suggestion.
    refined = verdict.status is Status.REFINED
    return ChatVerdict(
        hypothesis=hypothesis,
        tested=tested,
        status="confirmed" if verdict.status is Status.CONFIRMED else "refuted",
        reason=verdict.reason,
        cites=verdict.cites,
        suggestion=verdict.refined_statement if refined else None,
    )

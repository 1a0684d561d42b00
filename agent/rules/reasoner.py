"""The `rules` reasoner: no LLM. Hypotheses are executable predicates synthesised from
the evidence; experiments are short texts retrieved from the explain side of the corpus
(where the predicate fires, and where it does not) plus minimal pairs made by
substituting the word it fires on; verdicts come from measured token-level agreement.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.reasoner import Conclusion, NewExperiment, NewHypothesis, Verdict
from agent.rules.field_tests import (
    content_words,
    field_hypothesis,
    field_of,
    field_test_agrees,
    firing_sites,
    unseen_field_tests,
    unseen_member_words,
)
from agent.rules.fields import with_faint, with_field
from agent.rules.generalize import unseen_member_tests
from agent.rules.hypotheses import RIVALS, evidence_data, hypotheses_from
from agent.rules.offload import Offload
from agent.rules.outputs import CONFIRM_F1, claim_statement, fit_reason, output_claims
from agent.rules.pool_index import PoolIndex
from agent.rules.senses import split_predicate, unrelated_parts
from agent.rules.synthesis import (
    Labeled,
    agreement,
    evaluate,
    held_out_f1,
    pruned,
    synthesize,
    synthesize_many,
)
from agent.rules.table import TokenTable
from agent.rules.tiers import tiered, with_reliable_tokens
from agent.state import AgentState, Expect, Experiment, Hypothesis, Status
from lexicon.embeddings import Embed, MiniLMEmbedder
from predicates.language import AnyOf, Predicate, Tiered, TokenView, as_dict, from_dict
from predicates.output import claim_fit
from predicates.semantic import SemanticField
from probes.evidence.store import FeatureEvidence
from probes.promotions import Promotions

MAX_TEST_CHARS = 200
AGREE_F1 = 0.5  # a HIGH test agrees when the predicted and actual firing tokens overlap this well
DECIDE = 2  # consistent tests needed to confirm or refute (as in SAGE)
MOSTLY = 0.75  # share of agreeing tests that confirms despite a miss
MAX_REFINES = 2  # rewordings of one hypothesis
REFINED_KEPT = 256  # re-syntheses remembered (oldest dropped first)


@dataclass
class RulesReasoner:
    """`pool`: short texts (as tokens) from the explain side of the corpus, never from
    the scoring split; experiments are drawn from it. `embed` reads word meanings, to
    split a concluded word list into unrelated senses (None: never split)."""

    pool: Sequence[TokenView]
    seed: int = 0
    embed: Embed | None = field(default_factory=MiniLMEmbedder)
    offload: Offload = field(default_factory=Offload)
    name: str = "rules"
    _vocabulary: list[str] = field(default_factory=list, init=False, repr=False)
    _by_shape: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _common: set[str] = field(default_factory=set, init=False, repr=False)
    _content: list[str] = field(default_factory=list, init=False, repr=False)
    _index: PoolIndex = field(init=False, repr=False)
    _refined: dict[tuple[int, float, tuple[str, ...]], Predicate | None] = field(
        default_factory=dict, init=False, repr=False
    )
    _seen: dict[tuple[str, int], set[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        words = {t for view in self.pool for t in view.tokens if t.strip().isalnum()}
        self._vocabulary = sorted(words)
        for word in self._vocabulary:
            self._by_shape.setdefault(_shape(word), []).append(word)
        self._common = {w.strip().lower() for w in self._vocabulary}
        self._content = content_words(self.pool)
        self._index = PoolIndex(self.pool)

    async def aclose(self) -> None:
        """Stop the synthesis helper processes, if any were started."""
        self.offload.close()

    async def hypothesize(
        self, state: AgentState, evidence: FeatureEvidence
    ) -> list[NewHypothesis]:
        found = await self.offload.run(synthesize_many, evidence_data(evidence), RIVALS)
        proposed = [
            NewHypothesis(
                statement=h.statement,
                fires_on=h.fires_on,
                not_on=h.not_on,
                negative_control=h.negative_control,
                predicate=h.predicate,
            )
            for h in hypotheses_from(found)
        ]
        widened = await self.offload.run(with_field, found[0].predicate, evidence)
        if isinstance(widened, Tiered) and isinstance(widened.faint, SemanticField):
            proposed.append(field_hypothesis(widened.faint))
        return proposed

    async def design(
        self, state: AgentState, hypothesis: Hypothesis, evidence: FeatureEvidence
    ) -> list[NewExperiment]:
        """Two texts where the predicate fires (HIGH, peak on its first firing token) and
        two where it does not (LOW): a minimal pair and a retrieved text. When the
        predicate names a class or a word family, one HIGH text holds a member the
        evidence never showed. A semantic field's tests put its closest unseen members
        where the feature fired on its anchors (agent.rules.field_tests)."""
        used = {e.text for e in state.experiments}
        rng = random.Random(f"{self.seed}:{state.feature}:{state.round}:{hypothesis.id}")
        semantic = field_of(hypothesis)
        if semantic is not None:
            seen = self._firing_words(evidence)
            words = unseen_member_words(semantic, self._content, seen, rng)
            examples = evidence.top + [e for b in evidence.quantiles for e in b.examples]
            sites = firing_sites(semantic, examples)
            return unseen_field_tests(semantic, sites, self.pool, self._index, words, used, rng)
        predicate = _predicate(hypothesis)
        # numpy shuffles a pool of tens of thousands of lines far faster than random
        order = np.random.default_rng(rng.getrandbits(64)).permutation(len(self.pool)).tolist()
        seen = self._firing_words(evidence)
        firing = self._index.firing(predicate)
        highs = unseen_member_tests(
            predicate, self.pool, firing, seen, self._common, set(used), rng
        )
        lows: list[NewExperiment] = []
        retrieved_low = False
        for i in order:
            if len(highs) >= 2 and len(lows) >= 2:
                break
            view = self.pool[i]
            if view.text in used or (firing[i] and len(highs) >= 2):
                continue
            if not firing[i] and (retrieved_low or len(lows) >= 2):
                continue
            fires = predicate.evaluate(view)
            if any(fires) and len(highs) < 2:
                peak = view.tokens[fires.index(True)]
                highs.append(NewExperiment(text=view.text, expect=Expect.HIGH, expected_peak=peak))
                pair = self._substitute(view, fires, predicate, rng)
                if pair is not None and pair not in used and len(lows) < 2:
                    lows.append(NewExperiment(text=pair, expect=Expect.LOW))
            elif not any(fires) and not retrieved_low and len(lows) < 2:
                lows.append(NewExperiment(text=view.text, expect=Expect.LOW))
                retrieved_low = True
        return highs + lows[:2]

    def _firing_words(self, evidence: FeatureEvidence) -> set[str]:
        """`_firing_words`, once per feature: every hypothesis of every round asks."""
        key = (evidence.evidence_id, evidence.feature)
        if key not in self._seen:
            self._seen[key] = _firing_words(evidence)
            while len(self._seen) > REFINED_KEPT:
                self._seen.pop(next(iter(self._seen)))
        return self._seen[key]

    def _substitute(
        self, view: TokenView, fires: list[bool], predicate: Predicate, rng: random.Random
    ) -> str | None:
        """The text with each firing token replaced by a vocabulary token of the same
        shape (case, length class) on which the predicate does not fire: a near miss
        that tells a word list from the class it was drawn from. None when no
        replacement works."""
        for _ in range(20):
            tokens = list(view.tokens)
            for i, on in enumerate(fires):
                if on:
                    tokens[i] = self._same_shape(tokens[i], rng)
            swapped = TokenView.of(tokens)
            if not any(predicate.evaluate(swapped)) and len(swapped.text) <= MAX_TEST_CHARS:
                return swapped.text
        return None

    def _same_shape(self, token: str, rng: random.Random) -> str:
        shape = _shape(token)
        options = self._by_shape.get(shape) or self._vocabulary
        return rng.choice(options)

    async def analyze(
        self, state: AgentState, hypothesis: Hypothesis, evidence: FeatureEvidence
    ) -> Verdict:
        tests = [e for e in state.tests_of(hypothesis.id) if e.outcome is not None]
        semantic = field_of(hypothesis)
        if semantic is not None:
            return _field_verdict(semantic, tests)
        predicate = _predicate(hypothesis)
        agree = [e.id for e in tests if _agrees(predicate, e, state.threshold)]
        disagree = [e.id for e in tests if e.id not in agree]
        if len(disagree) >= DECIDE and len(disagree) > (1 - MOSTLY) * len(tests):
            # A control is only ever refuted; a hypothesis is reworded a bounded
            # number of times (each rewording re-synthesises on all the data).
            rewordable = not hypothesis.negative_control and len(hypothesis.earlier) < MAX_REFINES
            refined = await self._refine(state, hypothesis, evidence) if rewordable else None
            if refined is not None:
                return Verdict(
                    status=Status.REFINED,
                    reason=f"{len(disagree)} tests disagreed; re-synthesised with them",
                    cites=disagree,
                    refined_statement=f"Fires on {refined.describe()}.",
                    refined_predicate=as_dict(refined),
                )
            return Verdict(
                status=Status.REFUTED,
                reason=f"{len(disagree)} of {len(tests)} tests disagreed",
                cites=disagree,
            )
        kinds = {e.expect for e in tests if e.id in agree}
        clean = len(agree) >= DECIDE and not disagree and kinds == {Expect.HIGH, Expect.LOW}
        # A hypothesis right on nearly every test holds; one miss in many is noise or a
        # corner the explanation may leave out.
        mostly = len(agree) >= 2 * DECIDE and len(agree) >= MOSTLY * len(tests)
        if clean or mostly:
            return Verdict(
                status=Status.CONFIRMED,
                reason=f"{len(agree)} of {len(tests)} tests agreed",
                cites=agree,
            )
        return Verdict(
            status=Status.OPEN, reason=f"{len(agree)} of {len(tests)} agreed so far", cites=[]
        )

    async def _refine(
        self, state: AgentState, hypothesis: Hypothesis, evidence: FeatureEvidence
    ) -> Predicate | None:
        run = tuple(e.id for e in state.experiments if e.outcome is not None)
        key = (state.feature, state.threshold, run)
        if key not in self._refined:  # every hypothesis of a round refines on the same data
            data = evidence_data(evidence) + experiment_data(state.experiments, state.threshold)
            found_any = any(any(item.labels) for item in data)
            synthesis = await self.offload.run(synthesize, data) if found_any else None
            self._refined[key] = synthesis.predicate if synthesis else None
            while len(self._refined) > REFINED_KEPT:
                self._refined.pop(next(iter(self._refined)))
        refined = self._refined[key]
        if refined is None:
            return None
        # A refinement that says what another hypothesis already says adds nothing:
        # that one carries on, this one is refuted.
        said = {from_dict(h.predicate).describe() for h in state.hypotheses if h.predicate}
        return None if refined.describe() in said else refined

    async def output_hypotheses(
        self, state: AgentState, evidence: FeatureEvidence, seen: Promotions
    ) -> list[NewHypothesis]:
        lens = [t.token for t in evidence.promoted or []]
        return [
            NewHypothesis(
                statement=claim_statement(claim),
                fires_on=f"next tokens: {claim.describe()}",
                not_on="the other tokens the model finds likely there",
                side="output",
                predicate=as_dict(claim),
            )
            for claim, _ in output_claims(seen, lens)
        ]

    async def judge_output(
        self, state: AgentState, hypothesis: Hypothesis, tested: Promotions, test: str
    ) -> Verdict:
        fit = claim_fit(_predicate(hypothesis), tested)
        holds = fit.f1 >= CONFIRM_F1
        return Verdict(
            status=Status.CONFIRMED if holds else Status.REFUTED,
            reason=fit_reason(fit, test),
            cites=[test],
        )

    async def conclude(self, state: AgentState, evidence: FeatureEvidence) -> Conclusion:
        inputs = [h for h in state.hypotheses if h.side == "input"]
        fields = {h.id: f for h in inputs if (f := field_of(h)) is not None}
        rivals = [
            h for h in inputs if not h.negative_control and h.predicate and h.id not in fields
        ]
        confirmed = [h for h in rivals if h.status is Status.CONFIRMED]
        pool = confirmed or [h for h in rivals if h.status is not Status.REFUTED] or rivals
        data = evidence_data(evidence) + experiment_data(state.experiments, state.threshold)
        truth = [v for item in data for v in item.labels]
        table = TokenTable.of(data)

        def fit(h: Hypothesis) -> float:
            predicted = evaluate(_predicate(h), data, table)
            return agreement(predicted, _array(truth)).f1

        best = max(pool, key=fit)
        predicate = pruned(_predicate(best), data, table)
        support = [e.id for e in state.tests_of(best.id) if _agrees(predicate, e, state.threshold)]
        held_out = await self.offload.run(held_out_f1, data)
        polysemantic = False
        if self.embed is not None:  # off the event loop: the first call loads a model
            predicate, polysemantic = await asyncio.to_thread(self._senses, predicate, data)
        parts = predicate.parts if isinstance(predicate, AnyOf) else (predicate,)
        if not polysemantic:
            tests = experiment_data(state.experiments, state.threshold)
            predicate = tiered(parts, evidence, state.threshold, tests)
            predicate = with_reliable_tokens(predicate, evidence)
            for id_, semantic in fields.items():
                if state.hypothesis(id_).status is not Status.CONFIRMED:
                    continue  # only a field its unseen members confirmed is claimed
                predicate = with_faint(predicate, semantic)
                support += [e.id for e in state.tests_of(id_) if field_test_agrees(semantic, e)]
        return Conclusion(
            text=_sentence(predicate, parts, polysemantic=polysemantic),
            labels=[p.describe() for p in parts],
            evidence=support,
            # Held out, and lower when the experiments never confirmed it.
            confidence=round(held_out * (1.0 if best in confirmed else 0.6), 3),
            predicate=as_dict(predicate),
        )

    def _senses(self, predicate: Predicate, data: list[Labeled]) -> tuple[Predicate, bool]:
        """The predicate with each list of unrelated words split by sense, and whether
        its parts name unrelated things (a polysemantic feature)."""
        assert self.embed is not None
        split = split_predicate(predicate, data, self.embed)
        return split, split is not predicate or unrelated_parts(split, data, self.embed)


def _field_verdict(field: SemanticField, tests: Sequence[Experiment]) -> Verdict:
    """A field holds when an unseen member fired and no control (a non-member in the
    same place) did; it is refuted (never reworded: the conclusion leaves it out) when
    every member stayed quiet, when a control fired too, or when nothing could be tried."""
    agree = [e.id for e in tests if field_test_agrees(field, e)]
    disagree = [e.id for e in tests if e.id not in agree]
    members = [e.id for e in tests if e.expect is Expect.WEAK]
    fired = [i for i in members if i in agree]
    if fired and all(i in members for i in disagree):
        reason = f"{len(fired)} of {len(members)} unseen members fired, and no non-member"
        return Verdict(status=Status.CONFIRMED, reason=reason, cites=agree)
    if not members:
        return Verdict(status=Status.REFUTED, reason="no unseen member to test", cites=[])
    reason = (
        f"all {len(members)} unseen members stayed quiet"
        if not fired
        else "a non-member in the same place fired too"
    )
    return Verdict(status=Status.REFUTED, reason=reason, cites=disagree)


def _sentence(predicate: Predicate, parts: Sequence[Predicate], polysemantic: bool) -> str:
    if not polysemantic:
        return f"Fires on {predicate.describe()}."
    listed = "; ".join(f"({i}) {p.describe()}" for i, p in enumerate(parts, 1))
    return f"Polysemantic: fires on {len(parts)} unrelated things: {listed}."


def experiment_data(experiments: Sequence[Experiment], threshold: float) -> list[Labeled]:
    """Probe runs as labelled tokens: fired where the activation reaches `threshold`."""
    return [
        Labeled(TokenView.of(e.outcome.tokens), tuple(a >= threshold > 0 for a in e.outcome.acts))
        for e in experiments
        if e.outcome is not None
    ]


def _firing_words(evidence: FeatureEvidence) -> set[str]:
    """The words (lowercased) the feature fired on anywhere in its evidence."""
    out: set[str] = set()
    for item in evidence_data(evidence):
        for i, label in enumerate(item.labels, start=item.offset):
            word = item.view.word(i) if label else None
            if word:
                out.add(word.lower())
    return out


def _agrees(predicate: Predicate, experiment: Experiment, threshold: float) -> bool:
    """Token-level: a HIGH test agrees when the predicted firing tokens match the actual
    ones (F1 >= AGREE_F1); a LOW test when the feature stays below the threshold."""
    outcome = experiment.outcome
    if outcome is None:
        return False
    actual = [a >= threshold for a in outcome.acts]
    if experiment.expect is Expect.LOW:
        return not any(actual)
    predicted = predicate.evaluate(TokenView.of(outcome.tokens))
    return agreement(_array(predicted), _array(actual)).f1 >= AGREE_F1


def _array(values: Sequence[bool]) -> np.ndarray:
    return np.asarray(values, dtype=bool)


def _shape(token: str) -> str:
    """A token's look: leading space, then its case or digit class."""
    body = token.strip()
    kind = (
        "digits"
        if body.isdigit()
        else "upper"
        if body.isupper()
        else "title"
        if body.istitle()
        else "lower"
        if body.islower()
        else "other"
    )
    return ("_" if token.startswith(" ") else "") + kind


def _predicate(hypothesis: Hypothesis) -> Predicate:
    if hypothesis.predicate is None:
        raise ValueError(f"hypothesis {hypothesis.id} has no predicate for the rules reasoner")
    return from_dict(hypothesis.predicate)

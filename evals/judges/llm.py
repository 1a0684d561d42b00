"""`LLMJudge`: the scorer LLM reads an explanation and predicts from it alone.

Prompts follow delphi (Paulo et al. 2024) for detection, fuzzing and intruder detection
and Bills et al. (2023) for simulation, in our own words. The explanation and every
corpus text go through `delimit()` as data, and the system prompt carries DATA_NOTE, so
a text that says "ignore your instructions" stays a text to read.

Two modes, picked by `mode` ("auto" tries log-probabilities once and remembers when the
server sends none; "logprobs" insists; "text" never asks):
- with log-probabilities, detection and fuzzing ask one example per call for a single
  digit and read P(1) / (P(0) + P(1)) from its top alternatives (delphi's reading), so
  scorers get graded probabilities for an AUC; simulation asks for one line per token,
  "index<TAB>token<TAB>activation", and takes each activation's expected value over the
  tokens "0".."10" (Bills et al.'s expected-value simulator);
- without, detection and fuzzing judge shuffled batches of `batch_size` numbered
  examples as JSON verdicts (0 or 1 each), and simulation asks for the JSON list of
  [token index, activation] where the feature fires (0 elsewhere).
A log-probability reply that cannot be read (no 0/1 digit, lines missing) is asked
again in the JSON form for that example. Intruder detection asks once per round for the
intruder's number: a single digit read as a probability per example from its top
alternatives, or, without log-probabilities (or past 9 examples), {"intruder": n}.

Usage: every call's LLM usage adds to `judge.usage` (all calls of this judge) and, by
the client, to each `llm_client.metered()` block it runs in. Scorers use `metered()`:
features are scored concurrently, so before/after copies of `judge.usage` would count
other features' calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from itertools import groupby
from typing import Literal, TypeVar

from pydantic import BaseModel

from evals.core import Explained, Highlighted, JudgeUnavailable
from evals.judges.llm_replies import (
    MAX_TEXT_CHARS,
    SCALE,
    Activations,
    Choice,
    Intruder,
    Texts,
    Verdicts,
    binary_probability,
    choice_probabilities,
    simulation_values,
    sized,
)
from llm_client import (
    DATA_NOTE,
    LLMClient,
    LLMLogprobsUnavailableError,
    LLMUsage,
    Message,
    TextWithLogprobs,
    delimit,
)
from probes.evidence.store import Example

log = logging.getLogger(__name__)

Mode = Literal["auto", "logprobs", "text"]
T = TypeVar("T", bound=BaseModel)
X = TypeVar("X")
R = TypeVar("R")

DETECT_TOP_LOGPROBS = 5  # delphi reads P(0) and P(1) among the top 5 alternatives
SIMULATE_TOP_LOGPROBS = 10  # room for the 11 values 0-10 to share the mass
SIMULATE_TOKENS_PER_LINE = 12  # output budget per "index<TAB>token<TAB>value" line

SYSTEM = (
    "You check an explanation of one feature of a sparse autoencoder trained on a "
    "language model. A feature activates on some tokens of a text and not on others; "
    "from the explanation alone, you predict where it activates. "
    f"{DATA_NOTE}"
)
INTRUDER_SYSTEM = (
    "You study the features of a sparse autoencoder trained on a language model. A "
    "feature activates on some tokens of a text and not on others. You see numbered "
    "texts with the tokens where a feature activates marked as <<token>>: all of them "
    "but one come from the same feature, and one, the intruder, comes from a different "
    f"feature. You find the intruder. {DATA_NOTE}"
)
STEERED_SYSTEM = (
    "You study the features of a sparse autoencoder trained on a language model. Turning "
    "a feature up changes what the model writes next. From an explanation of what one "
    "feature does to the model's output, you tell which of several continuations were "
    f"written with that feature turned up. {DATA_NOTE}"
)
# Per task, the question asked about each text.
_QUESTIONS = {
    "detect": "Does the feature activate on at least one token of this text?",
    "fuzz": (
        "Some tokens of this text are marked as <<token>>. Are the marked tokens the ones "
        "the explanation says the feature activates on (nothing marked: it activates "
        "nowhere in the text)?"
    ),
}


class LLMJudge:
    """The Judge protocol over an `LLMClient` (its Redis cache makes reruns free)."""

    def __init__(
        self,
        client: LLMClient,
        *,
        mode: Mode = "auto",
        batch_size: int = 5,
        seed: int = 0,
        name: str | None = None,
        simulate_with_logprobs: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.client = client
        self.mode = mode
        self.batch_size = batch_size
        self.seed = seed
        self.name = name or f"llm:{client.config.model}"
        self.usage = LLMUsage()
        # Simulating through log-probabilities writes ~6 tokens per token of text: on a
        # small in-process model that is minutes per example, so it may ask JSON instead.
        self.simulate_with_logprobs = simulate_with_logprobs
        # Whether the server sends log-probabilities: None until the first reply says.
        self._has_logprobs: bool | None = {"auto": None, "logprobs": True, "text": False}[mode]

    @property
    def uses_logprobs(self) -> bool | None:
        """True or False once known; None before the first call in "auto" mode."""
        return self._has_logprobs

    def can_judge(self, explained: Explained | None) -> bool:
        return explained is None or bool(explained.text.strip())

    async def detect(self, explained: Explained, examples: Sequence[Example]) -> list[float]:
        return await self._classify("detect", explained, [e.text for e in examples])

    async def fuzz(self, explained: Explained, items: Sequence[Highlighted]) -> list[float]:
        return await self._classify("fuzz", explained, [marked_text(i) for i in items])

    async def simulate(
        self, explained: Explained, examples: Sequence[Example]
    ) -> list[list[float]]:
        shown = self._explanation(explained)
        return await self._each(lambda e: self._simulate_one(shown, e.tokens), list(examples))

    async def generate(self, explained: Explained, n: int) -> list[str]:
        if n < 0:
            raise ValueError(f"cannot generate {n} texts")
        if n == 0:
            return []
        ask = (
            f"{self._explanation(explained)}\n\nWrite {n} different short texts, each at most "
            f"{MAX_TEXT_CHARS} characters, on which this feature should activate strongly "
            'according to the explanation. Reply as {"texts": ["...", ...]}.'
        )
        out = await self._json(ask, sized(Texts, n), "judge-generate")
        return out.chosen()

    async def intruder(
        self, explained: Explained | None, rounds: Sequence[Sequence[Highlighted]]
    ) -> list[list[float]]:
        shown = "" if explained is None else self._explanation(explained) + "\n\n"
        texts = [[marked_text(item) for item in items] for items in rounds]
        return await self._each(lambda t: self._intruder_round(shown, t), texts)

    async def pick_steered(
        self, explained: Explained, prompts: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[float]:
        if len(options) < 2:
            raise ValueError(f"a steered pick needs at least 2 options, not {len(options)}")
        claim = explained.output_text or explained.text
        if not claim.strip():
            raise JudgeUnavailable(f"{explained.explainer}'s explanation has no text to judge")
        listed_prompts = "\n".join(delimit(f"prompt_{i}", p) for i, p in enumerate(prompts, 1))
        listed = "\n".join(
            f"Option {k}:\n"
            + "\n".join(delimit(f"option_{k}_continuation_{i}", t) for i, t in enumerate(o, 1))
            for k, o in enumerate(options, 1)
        )
        ask = (
            "What the feature does to the language model's output, as the explanation "
            f"says:\n{delimit('explanation', claim)}\n\nThe model continued these prompts, "
            f"in order:\n{listed_prompts}\n\nEach option below continues every prompt "
            "once, with a different feature turned up; only one option's feature is the "
            f"explained one.\n{listed}\n\nWhich option was written with the explained "
            "feature turned up?"
        )
        return await self._choose(ask, len(options), "judge-steered-pick", STEERED_SYSTEM, Choice)

    # -- intruder detection ---------------------------------------------------------

    async def _intruder_round(self, shown: str, texts: list[str]) -> list[float]:
        if len(texts) < 2:
            raise ValueError(f"an intruder round needs at least 2 examples, not {len(texts)}")
        listed = "\n".join(
            f"Example {i}:\n{delimit(f'example_{i}', t)}" for i, t in enumerate(texts, 1)
        )
        about = "the feature the explanation describes" if shown else "the same feature"
        ask = (
            f"{shown}{listed}\n\nAll examples but one come from {about}; the intruder's "
            "marked tokens are where a different feature activates. Which example is the "
            "intruder?"
        )
        return await self._choose(ask, len(texts), "judge-intruder", INTRUDER_SYSTEM, Intruder)

    async def _choose(
        self, ask: str, n: int, purpose: str, system: str, schema: type[Intruder | Choice]
    ) -> list[float]:
        """Per numbered choice 1..n, the probability the judge names it: read from the
        log-probabilities of a single digit, else asked as JSON (`schema`'s one key)."""
        if n <= 9:  # its number is a single digit to read probabilities from
            reply = await self._logprobs(
                f"{ask} Answer with its number only.", purpose, 2,
                max(DETECT_TOP_LOGPROBS, n), system=system,
            )  # fmt: skip
            probs = None if reply is None else choice_probabilities(reply.tokens, n)
            if probs is not None:
                return probs
            if reply is not None:
                log.warning("unreadable %s reply; asking again for JSON: %r", purpose, reply.text)
        key = next(iter(schema.bounded(n)))
        ask = f'{ask} Reply as {{"{key}": number}}.'
        out = await self._json(ask, sized(schema, n), purpose, system)
        return out.probabilities()

    # -- detection and fuzzing ------------------------------------------------------

    async def _classify(self, task: str, explained: Explained, texts: list[str]) -> list[float]:
        shown = self._explanation(explained)
        probs = await self._each(lambda t: self._probability(task, shown, t), texts)
        missing = [i for i, p in enumerate(probs) if p is None]
        if missing:
            verdicts = await self._verdicts(task, shown, [texts[i] for i in missing])
            for i, v in zip(missing, verdicts, strict=True):
                probs[i] = v
        return [p for p in probs if p is not None]

    async def _probability(self, task: str, shown: str, text: str) -> float | None:
        """P(1) from one single-digit answer; None without usable log-probabilities."""
        ask = (
            f"{shown}\n\n{_QUESTIONS[task]}\n{delimit('text', text)}\n\n"
            "Answer with a single digit: 1 for yes, 0 for no."
        )
        reply = await self._logprobs(ask, f"judge-{task}", 2, DETECT_TOP_LOGPROBS)
        return None if reply is None else binary_probability(reply.tokens)

    async def _verdicts(self, task: str, shown: str, texts: list[str]) -> list[float]:
        """0/1 per text from JSON verdicts on seeded-shuffled batches: a batch mixes
        activating and quiet examples whatever order the scorer passed them in."""
        order = list(range(len(texts)))
        random.Random(self.seed).shuffle(order)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        answers = await asyncio.gather(
            *(self._verdict_batch(task, shown, [texts[i] for i in b]) for b in batches)
        )
        out = [0.0] * len(texts)
        for batch, values in zip(batches, answers, strict=True):
            for i, v in zip(batch, values, strict=True):
                out[i] = v
        return out

    async def _verdict_batch(self, task: str, shown: str, texts: list[str]) -> list[float]:
        listed = "\n".join(
            f"Example {i}:\n{delimit(f'example_{i}', t)}" for i, t in enumerate(texts, 1)
        )
        ask = (
            f"{shown}\n\nAnswer this question for each numbered example: {_QUESTIONS[task]}"
            f"\n\n{listed}\n\nReply as "
            '{"verdicts": [{"example": 1, "answer": true}, ...]} (true for yes, false for '
            "no), one verdict per example."
        )
        out = await self._json(ask, sized(Verdicts, len(texts)), f"judge-{task}")
        return [1.0 if yes else 0.0 for yes in out.in_order()]

    # -- simulation -----------------------------------------------------------------

    async def _simulate_one(self, shown: str, tokens: list[str]) -> list[float]:
        if not tokens:
            return []
        listing = delimit("tokens", "\n".join(f"{i}\t{_show(t)}" for i, t in enumerate(tokens)))
        intro = (
            f"{shown}\n\nA text, one token per line: its index, a tab, the token (\\n "
            f"stands for a line break, \\t for a tab).\n{listing}\n\nFor each token, "
            f"predict the feature's activation on it from 0 (none) to {SCALE} (its "
            "strongest), from the explanation alone; on most tokens a feature is 0."
        )
        lines = (
            f"{intro} Reply with one line per token, in order, and nothing else: the "
            "index, a tab, the token, a tab, the activation as a whole number."
        )
        budget = SIMULATE_TOKENS_PER_LINE * len(tokens) + 16
        reply = None
        if self.simulate_with_logprobs:
            reply = await self._logprobs(lines, "judge-simulate", budget, SIMULATE_TOP_LOGPROBS)
        if reply is not None:
            values = simulation_values(reply, len(tokens))
            if values is not None:
                return values
            log.warning("unreadable simulation reply; asking again for JSON:\n%s", reply.text)
        ask = (
            f"{intro} List the tokens it activates on as [index, activation] pairs, "
            f"activation from 1 to {SCALE}; leave out the tokens where it is 0. Reply as "
            '{"activations": [[index, activation], ...]} ({"activations": []} when it '
            "activates nowhere)."
        )
        out = await self._json(ask, sized(Activations, len(tokens)), "judge-simulate")
        return out.dense()

    # -- calls ----------------------------------------------------------------------

    def _explanation(self, explained: Explained) -> str:
        if not self.can_judge(explained):
            raise JudgeUnavailable(f"{explained.explainer}'s explanation has no text to judge")
        return f"The explanation of the feature:\n{delimit('explanation', explained.text)}"

    async def _each(self, fn: Callable[[X], Awaitable[R]], items: list[X]) -> list[R]:
        """`fn` over `items` concurrently (the client caps requests in flight). While
        log-probability support is unknown the first item goes alone, so a server
        without them costs one wasted call, not one per item."""
        if not items:
            return []
        if self._has_logprobs is None:
            head = await fn(items[0])
            return [head, *await asyncio.gather(*(fn(x) for x in items[1:]))]
        return list(await asyncio.gather(*(fn(x) for x in items)))

    def _messages(self, ask: str, system: str = SYSTEM) -> list[Message]:
        return [{"role": "system", "content": system}, {"role": "user", "content": ask}]

    async def _json(self, ask: str, schema: type[T], purpose: str, system: str = SYSTEM) -> T:
        spent = LLMUsage()
        try:
            return await self.client.complete_json(
                self._messages(ask, system), schema, purpose=purpose, usage=spent
            )
        finally:
            self._charge(spent)

    async def _logprobs(
        self, ask: str, purpose: str, max_tokens: int, top: int, system: str = SYSTEM
    ) -> TextWithLogprobs | None:
        """The reply with log-probabilities; None when the server sends none (then
        remembered in "auto" mode; an error in "logprobs" mode)."""
        if self._has_logprobs is False:
            return None
        spent = LLMUsage()
        try:
            reply = await self.client.complete_logprobs(
                self._messages(ask, system),
                purpose=purpose,
                top_logprobs=top,
                max_tokens=max_tokens,
                usage=spent,
            )
        except LLMLogprobsUnavailableError:
            if self.mode == "logprobs":
                raise
            if self._has_logprobs is not False:
                log.warning("%s sends no log-probabilities: judging from text", self.name)
            self._has_logprobs = False
            return None
        finally:
            self._charge(spent)
        self._has_logprobs = True
        return reply

    def _charge(self, spent: LLMUsage) -> None:
        self.usage.add(spent)  # meters (`llm_client.metered`) are charged by the client


# -- rendering ---------------------------------------------------------------------


def marked_text(item: Highlighted) -> str:
    """The example's text with each run of marked tokens wrapped as <<...>> (delphi),
    the run's outer whitespace left outside: "I <<love>> you", not "I<< love>> you"."""
    tokens = item.example.tokens
    if len(item.marked) != len(tokens):
        raise ValueError(f"{len(item.marked)} marks for {len(tokens)} tokens")
    out: list[str] = []
    for mark, run in groupby(zip(item.marked, tokens, strict=True), key=lambda mt: mt[0]):
        text = "".join(t for _, t in run)
        core = text.strip()
        if mark and core:
            start = text.index(core)
            text = f"{text[:start]}<<{core}>>{text[start + len(core) :]}"
        elif mark:
            text = f"<<{text}>>"  # a marked run of whitespace only
        out.append(text)
    return "".join(out)


def _show(token: str) -> str:
    """A token on one line of a listing: line breaks and tabs written as \\n and \\t."""
    return (
        token.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )

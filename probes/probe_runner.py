"""Probe runs shared by concurrent agent runs: their texts coalesce into batched forwards.

Each agent run awaits `ProbeRunner.run(texts, feature)`. Requests that arrive while a
forward is in flight wait in a queue; when it finishes, everything queued (up to
`max_batch_texts`) goes through the model in ONE call, so 16 concurrent runs cost a
handful of forwards instead of 16. The forward runs in a worker thread, so the event
loop (and the LLM calls of other runs) keeps going meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from errors import UserError
from identifiers.features import unknown_feature
from probes.activations import FeatureActivations, FeatureSource

if TYPE_CHECKING:
    from probes.promotions import Promotions
    from probes.steering import Steering, SteeringResult

MAX_PROBE_CHARS = 2000  # a probe text is a short test input, not a document


class ProbeError(UserError):
    """A probe request the runner refuses (empty or too long a text, unknown feature)."""


@dataclass(frozen=True)
class ProbeResult:
    """One text's tokens and the feature's activation on each."""

    text: str
    tokens: tuple[str, ...]
    acts: tuple[float, ...]

    @property
    def max_act(self) -> float:
        return max(self.acts, default=0.0)

    @property
    def peak(self) -> int | None:
        """Index of the most active token; None when the feature never fires."""
        if self.max_act <= 0:
            return None
        return self.acts.index(self.max_act)


@dataclass
class _Request:
    texts: list[str]
    done: asyncio.Future[list[Any]]
    answer: Callable[[FeatureActivations], Any]  # what this caller wants of each text


@dataclass
class ProbeRunner:
    source: FeatureSource
    max_batch_texts: int = 64
    forward_calls: int = 0
    texts_run: int = 0
    _pending: deque[_Request] = field(default_factory=deque, init=False, repr=False)
    _wakeup: asyncio.Event | None = field(default=None, init=False, repr=False)
    _worker: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    # One forward at a time through the model: probe batches and steering take turns.
    # A lock per event loop (callers may run one loop after another, as the CLI does).
    _turns: dict[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=dict, init=False, repr=False
    )

    async def run(self, texts: Sequence[str], feature: int) -> list[ProbeResult]:
        """The feature's activations on each text (in order)."""
        self._check(texts, feature)
        return await self._submit(texts, lambda acts: _result(acts, feature))

    async def activations(self, texts: Sequence[str]) -> list[FeatureActivations]:
        """Every feature's activations on each text, batched with the probe runs (the
        HTTP activations endpoint shares the forwards of running agents). The caller
        checks the texts: it may allow longer ones than a probe."""
        if not texts:
            raise ProbeError("give at least one text")
        return await self._submit(texts, lambda acts: acts)

    @property
    def steers(self) -> bool:
        """Whether its features have an output side to steer with (an SAE's decoder;
        planted features have none)."""
        from probes.sae_runner import SAEFeatureSource

        return isinstance(self.source, SAEFeatureSource)

    async def steer(
        self, texts: Sequence[str], steering: Steering, **options: Any
    ) -> list[SteeringResult]:
        """`probes.steering.steer_texts` on the source's model and SAE, in turn with the
        probe forwards. `options`: continuation_tokens, top_tokens, batch_size,
        keep_vocabulary."""
        from probes.sae_runner import SAEFeatureSource
        from probes.steering import steer_texts

        source = self.source
        if not isinstance(source, SAEFeatureSource):
            raise ProbeError(
                "these features are not an SAE's: there is no decoder direction to steer "
                "with (planted features are rules on text, with no output side)"
            )
        self._check(texts, steering.feature)
        async with self._model_turn():
            return await asyncio.to_thread(
                steer_texts, source.subject, source.sae, source.hookpoint, texts, steering,
                context_length=source.context_length, **options,
            )  # fmt: skip

    async def promotions(
        self, texts: Sequence[str], steering: Steering, batch_size: int = 8
    ) -> Promotions:
        """What steering does to the next token after `texts` (`probes.promotions`)."""
        from probes.promotions import promotions_of
        from probes.steering import token_text

        results = await self.steer(
            texts, steering, continuation_tokens=0, top_tokens=0, batch_size=batch_size,
            keep_vocabulary=True,
        )  # fmt: skip
        tokenizer = self.source.subject.tokenizer  # type: ignore[attr-defined]
        return promotions_of(results, lambda token_id: token_text(tokenizer, token_id))

    async def _submit(
        self, texts: Sequence[str], answer: Callable[[FeatureActivations], Any]
    ) -> list[Any]:
        if self._wakeup is None or self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.create_task(self._serve(self._wakeup))
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(texts), done, answer))
        self._wakeup.set()
        return await done

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def _model_turn(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop not in self._turns:
            self._turns = {loop: asyncio.Lock()}  # an earlier loop's lock is done with
        return self._turns[loop]

    def _check(self, texts: Sequence[str], feature: int) -> None:
        if not texts:
            raise ProbeError("give at least one probe text")
        for text in texts:
            if not text.strip():
                raise ProbeError("a probe text is empty; write some text to test")
            if len(text) > MAX_PROBE_CHARS:
                raise ProbeError(
                    f"a probe text has {len(text):,} characters; the limit is "
                    f"{MAX_PROBE_CHARS:,}: test short inputs"
                )
        if problem := unknown_feature([feature], len(self.source.feature_names)):
            raise ProbeError(problem)

    async def _serve(self, wakeup: asyncio.Event) -> None:
        while True:
            await wakeup.wait()
            batch = [self._pending.popleft()]
            size = len(batch[0].texts)
            while self._pending and size + len(self._pending[0].texts) <= self.max_batch_texts:
                batch.append(self._pending.popleft())
                size += len(batch[-1].texts)
            if not self._pending:
                wakeup.clear()
            await self._forward(batch)

    async def _forward(self, batch: list[_Request]) -> None:
        texts = [t for request in batch for t in request.texts]
        try:
            async with self._model_turn():
                results = await asyncio.to_thread(self.source.activations, texts)
        except Exception as error:  # every waiting run learns why, none hangs
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(error)
            return
        self.forward_calls += 1
        self.texts_run += len(texts)
        at = 0
        for request in batch:
            mine = results[at : at + len(request.texts)]
            at += len(request.texts)
            if not request.done.done():
                request.done.set_result([request.answer(r) for r in mine])


def _result(activations: FeatureActivations, feature: int) -> ProbeResult:
    column = activations.dense([feature])[:, 0].tolist()
    return ProbeResult(
        text=activations.text,
        tokens=tuple(t.text for t in activations.tokens),
        acts=tuple(column),
    )

"""Explanations in Redis, per (model, SAE, hookpoint, feature): every run's record is
kept, and one of them is the feature's *current* explanation.

Keys (values are versioned pydantic JSON; `{s}` is `Subject.key`, a short hash):
- `glossator:explanation:subjects`: a hash, field = subject key, value = the `Subject`;
- `glossator:explanation:{s}:features`: a sorted set of the features with a record;
- `glossator:explanation:{s}:{feature}:runs`: a hash, field = run id, value = the record;
- `glossator:explanation:{s}:{feature}:history`: a list of run ids, oldest first;
- `glossator:explanation:{s}:{feature}:current`: the current record (a copy of one run's).

Writes are optimistic transactions (WATCH on the runs hash and the current record, then
MULTI/EXEC, retried on conflict), so of two concurrent writers exactly one commits its
compare-and-set and the other re-reads and decides again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import BaseModel, Field, ValidationError, model_validator

from agent.state import Explanation
from errors import ServiceError
from identifiers import redis_keys
from identifiers.redis_keys import decoded

RECORD_VERSION = 1
PREFIX = redis_keys.EXPLANATION
SUBJECTS_KEY = f"{PREFIX}:subjects"
# Each conflict means another writer committed, so n writers need at most n tries each.
_MAX_TRIES = 200


class ExplanationStoreError(ServiceError):
    """Redis is unreachable, a stored value is malformed, or a run is unknown."""


class Subject(BaseModel):
    """What was explained: a feature index is only meaningful within one of these."""

    model: str = Field(min_length=1)  # e.g. "HuggingFaceTB/SmolLM2-135M-Instruct"
    sae: str = Field(min_length=1)  # the SAE's path or content hash
    hookpoint: str = Field(min_length=1)  # e.g. "blocks.6.hook_resid_post"

    @property
    def key(self) -> str:
        """16 hex digits of SHA-256 over the three fields: stable across processes and
        versions, and short enough for millions of keys."""
        canonical = json.dumps([self.model, self.sae, self.hookpoint])
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ExplanationRecord(BaseModel):
    version: int = RECORD_VERSION
    explanation: Explanation
    run_id: str = Field(min_length=1)
    explainer: str = Field(min_length=1)  # the reasoner backend, e.g. "rules", "openai"
    config: dict[str, Any] = Field(default_factory=dict)  # its settings (no secrets)
    stored_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    score: float | None = Field(default=None, allow_inf_nan=False)  # NaN would never compare
    scorer: str | None = None  # the eval that produced `score`

    @model_validator(mode="after")
    def _score_has_scorer(self) -> ExplanationRecord:
        if (self.score is None) != (self.scorer is None):
            raise ValueError("score and scorer go together: set both or neither")
        return self

    @property
    def feature(self) -> int:
        return self.explanation.feature


class StoreOutcome(BaseModel):
    """What `record` or `set_score` did."""

    run_id: str
    current_run_id: str  # the feature's current run after the call
    kept_current: bool  # True when this run did not become (or stay) current
    duplicate: bool = False  # the run id was already stored; nothing was written
    reason: str


def _budget_stopped(record: ExplanationRecord) -> bool:
    return record.explanation.stopped_by.startswith("budget")


def replaces(new: ExplanationRecord, old: ExplanationRecord) -> tuple[bool, str]:
    """Whether `new` (the later run) takes the place of `old` as the current explanation.

    1. `old` scored: `new` replaces it only when scored by the same scorer with a score
       >= old's (ties go to the newer run). Unscored, lower, or from another scorer (not
       comparable): old stays.
    2. `old` unscored, `new` scored: new replaces.
    3. Neither scored: new replaces, unless old has a higher confidence AND old was not
       stopped by a budget while new was.
    """
    if old.score is not None:
        if new.score is None:
            return False, f"current run {old.run_id} is scored ({old.scorer} {old.score:g})"
        if new.scorer != old.scorer:
            return False, (
                f"current run {old.run_id} is scored by {old.scorer}, this run by "
                f"{new.scorer}: not comparable; score both with one scorer"
            )
        if new.score < old.score:
            return False, f"current run {old.run_id} scores higher ({old.score:g} > {new.score:g})"
        return True, f"scores at least as well as run {old.run_id} ({new.score:g} >= {old.score:g})"
    if new.score is not None:
        return True, f"scored, and current run {old.run_id} is not"
    old_conf, new_conf = old.explanation.confidence, new.explanation.confidence
    if old_conf > new_conf and not _budget_stopped(old) and _budget_stopped(new):
        return False, (
            f"current run {old.run_id} is more confident ({old_conf:g} > {new_conf:g}) and "
            f"this run was stopped by {new.explanation.stopped_by}"
        )
    return True, f"newer than run {old.run_id} (neither is scored)"


def current_of(history: list[ExplanationRecord]) -> ExplanationRecord:
    """The current run of a history (oldest first): `replaces` applied in order, exactly
    as successive `record` calls would have; `set_score` uses it to re-decide."""
    best = history[0]
    for later in history[1:]:
        if replaces(later, best)[0]:
            best = later
    return best


def _where(client: Any) -> str:
    """The client's server, for messages; built from its pool so no password can leak."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


class ExplanationStore:
    """The explanations of one subject's features. `client` is a sync redis client."""

    def __init__(self, client: Any, subject: Subject) -> None:
        self.client = client
        self.subject = subject
        self._base = f"{PREFIX}:{subject.key}"

    def features_key(self) -> str:
        return f"{self._base}:features"

    def runs_key(self, feature: int) -> str:
        return f"{self._base}:{feature}:runs"

    def history_key(self, feature: int) -> str:
        return f"{self._base}:{feature}:history"

    def current_key(self, feature: int) -> str:
        return f"{self._base}:{feature}:current"

    def record(self, record: ExplanationRecord) -> StoreOutcome:
        """Append a run to its feature's history and make it current if `replaces` says
        so. Idempotent per run id: a retried delivery writes nothing and reports
        `duplicate=True` (the stored record, perhaps scored since, stays)."""
        feature = record.feature
        record = record.model_copy(update={"stored_at": datetime.now(UTC)})
        runs, current = self.runs_key(feature), self.current_key(feature)
        with self._redis(), self.client.pipeline() as pipe:
            for _ in range(_MAX_TRIES):
                try:
                    pipe.watch(runs, current)
                    old = self._parse(pipe.get(current), current)
                    if pipe.hexists(runs, record.run_id):
                        pipe.unwatch()
                        assert old is not None  # written in the same transaction as runs
                        return StoreOutcome(
                            run_id=record.run_id,
                            current_run_id=old.run_id,
                            kept_current=old.run_id != record.run_id,
                            duplicate=True,
                            reason=f"run {record.run_id} was already stored",
                        )
                    if old is None:
                        wins, reason = True, "first explanation of this feature"
                    else:
                        wins, reason = replaces(record, old)
                    pipe.multi()
                    pipe.hset(runs, record.run_id, record.model_dump_json())
                    pipe.rpush(self.history_key(feature), record.run_id)
                    if wins:
                        pipe.set(current, record.model_dump_json())
                    pipe.zadd(self.features_key(), {str(feature): feature})
                    pipe.hset(SUBJECTS_KEY, self.subject.key, self.subject.model_dump_json())
                    pipe.execute()
                    return StoreOutcome(
                        run_id=record.run_id,
                        current_run_id=record.run_id if wins or old is None else old.run_id,
                        kept_current=not wins,
                        reason=reason,
                    )
                except redis.WatchError:
                    continue  # another writer committed first: re-read and decide again
        raise self._contended(feature)

    def set_score(self, feature: int, run_id: str, scorer: str, score: float) -> StoreOutcome:
        """Attach (or replace) a run's score, then re-decide the current run over the
        whole history with `current_of`."""
        runs, current = self.runs_key(feature), self.current_key(feature)
        with self._redis(), self.client.pipeline() as pipe:
            for _ in range(_MAX_TRIES):
                try:
                    pipe.watch(runs, current)
                    history = self._history(pipe, feature)
                    found = [i for i, r in enumerate(history) if r.run_id == run_id]
                    if not found:
                        pipe.unwatch()
                        raise ExplanationStoreError(
                            f"no run {run_id!r} of feature {feature} in {runs}; record it first"
                        )
                    try:
                        scored = ExplanationRecord.model_validate(
                            {**history[found[0]].model_dump(), "scorer": scorer, "score": score}
                        )
                    except ValidationError as error:
                        raise ExplanationStoreError(
                            f"invalid score {score!r} from {scorer!r} for run {run_id}: "
                            f"{error.errors()[0]['msg']}"
                        ) from None
                    history[found[0]] = scored
                    best = current_of(history)
                    pipe.multi()
                    pipe.hset(runs, run_id, scored.model_dump_json())
                    pipe.set(current, best.model_dump_json())
                    pipe.execute()
                    return StoreOutcome(
                        run_id=run_id,
                        current_run_id=best.run_id,
                        kept_current=best.run_id != run_id,
                        reason=f"run {best.run_id} is current after re-deciding the history",
                    )
                except redis.WatchError:
                    continue
        raise self._contended(feature)

    def current(self, feature: int) -> ExplanationRecord | None:
        key = self.current_key(feature)
        with self._redis():
            return self._parse(self.client.get(key), key)

    def current_many(self, features: list[int]) -> dict[int, ExplanationRecord]:
        """The current records of those features that have one (one MGET per 1,000)."""
        found: dict[int, ExplanationRecord] = {}
        with self._redis():
            for at in range(0, len(features), 1000):
                chunk = features[at : at + 1000]
                raws = self.client.mget([self.current_key(f) for f in chunk]) if chunk else []
                for feature, raw in zip(chunk, raws, strict=True):
                    record = self._parse(raw, self.current_key(feature))
                    if record is not None:
                        found[feature] = record
        return found

    def history(self, feature: int) -> list[ExplanationRecord]:
        """Every run of the feature, oldest first."""
        with self._redis(), self.client.pipeline(transaction=True) as pipe:
            return self._history(pipe, feature)

    def features(self) -> list[int]:
        """The features with at least one run, ascending."""
        with self._redis():
            return [int(decoded(m)) for m in self.client.zrange(self.features_key(), 0, -1)]

    def _history(self, pipe: Any, feature: int) -> list[ExplanationRecord]:
        """Reads the history through `pipe`: immediately while it WATCHes, otherwise as
        one MULTI/EXEC so the run ids and their records are a consistent snapshot."""
        runs = self.runs_key(feature)
        if pipe.watching:
            ids, stored = pipe.lrange(self.history_key(feature), 0, -1), pipe.hgetall(runs)
        else:
            ids, stored = pipe.lrange(self.history_key(feature), 0, -1).hgetall(runs).execute()
        by_id = {decoded(k): v for k, v in stored.items()}
        records = []
        for run_id in map(decoded, ids):
            if run_id not in by_id:
                raise ExplanationStoreError(f"run {run_id} is in the history but not in {runs}")
            parsed = self._parse(by_id[run_id], f"{runs} field {run_id}")
            assert parsed is not None
            records.append(parsed)
        return records

    @staticmethod
    def _parse(raw: bytes | str | None, where: str) -> ExplanationRecord | None:
        if raw is None:
            return None
        try:
            record = ExplanationRecord.model_validate_json(raw)
        except ValidationError as error:
            first = error.errors()[0]
            # `from None`: the message says all; a pydantic traceback would only bury it.
            raise ExplanationStoreError(
                f"the explanation record at {where} is malformed ({first['msg']} at "
                f"{'.'.join(map(str, first['loc'])) or 'top level'}); delete or rewrite it"
            ) from None
        if record.version != RECORD_VERSION:
            raise ExplanationStoreError(
                f"the explanation record at {where} has version {record.version}, this "
                f"glossator reads version {RECORD_VERSION}"
            )
        return record

    @contextmanager
    def _redis(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise ExplanationStoreError(
                f"Redis is unreachable at {_where(self.client)} ({error}); is the server "
                "running, and is its URL right?"
            ) from error
        except redis.ResponseError as error:
            raise ExplanationStoreError(
                f"Redis refused an explanation-store command ({error}); are other programs "
                f"writing under {self._base}?"
            ) from error

    def _contended(self, feature: int) -> ExplanationStoreError:
        return ExplanationStoreError(
            f"gave up after {_MAX_TRIES} conflicting writes to feature {feature}'s explanation"
        )

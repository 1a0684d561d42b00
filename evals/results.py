"""A benchmark run's results in Redis: its config, each explainer's explanation per
feature, each score, and failures. Everything is written as soon as it is known, keyed
so a rerun of the same run skips what is done (resume after a kill costs nothing
twice).

Keys (all under `glossator:bench:<run>`):
- `:config`        the run's BenchConfig (JSON)
- `:explanations`  hash "<explainer>:<feature>" -> Explained (JSON)
- `:scores`        hash "<explainer>:<scorer>:<feature>" -> Score (JSON)
- `:failures`      hash "<explainer>:<feature>" -> why the explainer failed
`glossator:bench:runs` is a sorted set of run ids by creation time.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from pydantic import BaseModel

from errors import UserError
from evals.core import Explained, Score
from identifiers import redis_keys
from identifiers.redis_keys import decoded

PREFIX = redis_keys.BENCH
CONFIG_VERSION = 1


class BenchConfig(BaseModel):
    """What a run is: the same config resumes the same run."""

    version: int = CONFIG_VERSION
    run_id: str
    source: str  # "planted:<spec hash>" or "sae:<sae hash>"
    evidence_id: str
    features: list[int]
    feature_names: list[str] | None = None  # planted ids
    explainers: list[str]
    scorers: list[str]
    judges: list[str]
    per_quantile: int
    non_activating: int
    seed: int
    # Set when the scoring examples come from another corpus (all of it held out) than
    # the evidence's score split: its path and the id of its evidence.
    score_corpus: str | None = None
    score_evidence_id: str | None = None
    created_at: float = 0.0


class BenchResults:
    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.key = f"{PREFIX}:{run_id}"

    # -- config ------------------------------------------------------------------------

    def start(self, config: BenchConfig) -> BenchConfig:
        """Store the config of a new run, or return the stored one when the run exists
        (it must then be the same run: same features, explainers and scorers)."""
        stored = self.config()
        if stored is not None:
            mine = config.model_dump(exclude={"created_at"})
            if stored.model_dump(exclude={"created_at"}) != mine:
                raise BenchRunMismatch(
                    f"benchmark run {self.run_id!r} exists with another config; pick another "
                    "--run name, or rerun it with the same options to resume it"
                )
            return stored
        config = config.model_copy(update={"created_at": time.time()})
        with self.client.pipeline() as pipe:
            pipe.set(f"{self.key}:config", config.model_dump_json())
            pipe.zadd(f"{PREFIX}:runs", {self.run_id: config.created_at})
            pipe.execute()
        return config

    def config(self) -> BenchConfig | None:
        raw = self.client.get(f"{self.key}:config")
        return BenchConfig.model_validate_json(raw) if raw else None

    # -- explanations and scores -------------------------------------------------------

    def explanation(self, explainer: str, feature: int) -> Explained | None:
        raw = self.client.hget(f"{self.key}:explanations", f"{explainer}:{feature}")
        return Explained.model_validate_json(raw) if raw else None

    def put_explanation(self, explained: Explained) -> None:
        field = f"{explained.explainer}:{explained.feature}"
        with self.client.pipeline() as pipe:
            pipe.hset(f"{self.key}:explanations", field, explained.model_dump_json())
            pipe.hdel(f"{self.key}:failures", field)
            pipe.execute()

    def put_failure(self, explainer: str, feature: int, reason: str) -> None:
        self.client.hset(f"{self.key}:failures", f"{explainer}:{feature}", reason)

    def score(self, explainer: str, scorer: str, feature: int) -> Score | None:
        raw = self.client.hget(f"{self.key}:scores", f"{explainer}:{scorer}:{feature}")
        return Score.model_validate_json(raw) if raw else None

    def put_score(self, score: Score) -> None:
        field = f"{score.explainer}:{score.scorer}:{score.feature}"
        self.client.hset(f"{self.key}:scores", field, score.model_dump_json())

    # -- everything, for reports -------------------------------------------------------

    def scores(self) -> list[Score]:
        raw = self.client.hgetall(f"{self.key}:scores")
        return sorted(
            (Score.model_validate_json(v) for v in raw.values()),
            key=lambda s: (s.feature, s.explainer, s.scorer),
        )

    def explanations(self) -> dict[tuple[str, int], Explained]:
        raw = self.client.hgetall(f"{self.key}:explanations")
        out = {}
        for value in raw.values():
            e = Explained.model_validate_json(value)
            out[(e.explainer, e.feature)] = e
        return out

    def failures(self) -> dict[str, str]:
        raw: dict[Any, Any] = self.client.hgetall(f"{self.key}:failures")
        return {decoded(k): decoded(v) for k, v in raw.items()}


def list_runs(client: redis.Redis) -> list[str]:
    return [decoded(r) for r in client.zrange(f"{PREFIX}:runs", 0, -1)]


class BenchRunMismatch(UserError):
    """A run id already holds a run with another config."""

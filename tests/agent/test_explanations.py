"""The explanation store on a real embedded Valkey server: history, the current rule,
scores, idempotent retries, concurrent writers, and clear errors."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import pytest
import redis

from agent.explanations import (
    ExplanationRecord,
    ExplanationStore,
    ExplanationStoreError,
    Subject,
    current_of,
)
from agent.state import Cost, Explanation


def _subject() -> Subject:
    # A unique model name per test: tests never share keys on the session's server.
    return Subject(model=f"test-{uuid.uuid4()}", sae="/saes/l6.safetensors", hookpoint="l6")


def _store(client: redis.Redis) -> ExplanationStore:
    return ExplanationStore(client, _subject())


def _record(
    run_id: str,
    *,
    feature: int = 7,
    confidence: float = 0.5,
    stopped_by: str = "decided",
    score: float | None = None,
    scorer: str | None = None,
) -> ExplanationRecord:
    explanation = Explanation(
        feature=feature,
        text=f"explanation from {run_id}",
        labels=["label"],
        evidence=["E1"],
        confidence=confidence,
        cost=Cost(llm_calls=2, llm_tokens=300, probe_texts=8, seconds=1.5),
        stopped_by=stopped_by,
    )
    return ExplanationRecord(
        explanation=explanation,
        run_id=run_id,
        explainer="rules",
        config={"max_rounds": 6},
        score=score,
        scorer=scorer if scorer is not None or score is None else "detection",
    )


def test_subject_key_is_short_stable_and_distinct() -> None:
    a = Subject(model="m", sae="s", hookpoint="h")
    assert a.key == Subject(model="m", sae="s", hookpoint="h").key
    assert len(a.key) == 16
    assert a.key != Subject(model="m", sae="s", hookpoint="h2").key
    # Fields are not simply concatenated: moving a character between fields changes it.
    assert Subject(model="ab", sae="c", hookpoint="h").key != a.key
    assert (
        Subject(model="ab", sae="c", hookpoint="h").key
        != Subject(model="a", sae="bc", hookpoint="h").key
    )


def test_history_keeps_every_run_in_order_with_config_and_cost(redis_client: redis.Redis) -> None:
    store = _store(redis_client)
    assert store.current(7) is None and store.history(7) == [] and store.features() == []
    for i in range(5):
        store.record(_record(f"run-{i}"))
    store.record(_record("other", feature=3))
    history = store.history(7)
    assert [r.run_id for r in history] == [f"run-{i}" for i in range(5)]
    assert [r.stored_at for r in history] == sorted(r.stored_at for r in history)
    assert history[0].config == {"max_rounds": 6} and history[0].explainer == "rules"
    assert history[0].explanation.cost.probe_texts == 8
    current = store.current(7)
    assert current is not None and current.run_id == "run-4"  # unscored: newest wins
    assert store.features() == [3, 7]
    assert redis_client.hget("glossator:explanation:subjects", store.subject.key) is not None


def test_better_scored_current_survives_worse_and_unscored_runs(
    redis_client: redis.Redis,
) -> None:
    store = _store(redis_client)
    store.record(_record("good", score=0.8))
    worse = store.record(_record("worse", score=0.6, confidence=0.99))
    assert worse.kept_current and worse.current_run_id == "good"
    assert "scores higher" in worse.reason
    unscored = store.record(_record("unscored", confidence=1.0))
    assert unscored.kept_current and "is scored" in unscored.reason
    other = store.record(_record("other-scorer", score=0.95, scorer="simulation"))
    assert other.kept_current and "not comparable" in other.reason
    current = store.current(7)
    assert current is not None and current.run_id == "good" and current.score == 0.8
    assert len(store.history(7)) == 4  # the losers are still kept


def test_better_or_equal_newer_score_replaces(redis_client: redis.Redis) -> None:
    store = _store(redis_client)
    store.record(_record("a", score=0.5))
    better = store.record(_record("b", score=0.7))
    assert not better.kept_current and better.current_run_id == "b"
    tie = store.record(_record("c", score=0.7))
    assert not tie.kept_current and tie.current_run_id == "c"  # ties go to the newer run


def test_unscored_rule_confidence_and_budget(redis_client: redis.Redis) -> None:
    store = _store(redis_client)
    store.record(_record("decided", confidence=0.9))
    budget = store.record(_record("budget", confidence=0.4, stopped_by="budget: rounds"))
    assert budget.kept_current and "more confident" in budget.reason
    # Less confident but not budget-stopped: the newer replaces.
    assert not store.record(_record("newer", confidence=0.3)).kept_current
    # Both budget-stopped: the newer replaces, whatever the confidence.
    other = _store(redis_client)
    other.record(_record("b1", confidence=0.9, stopped_by="budget: llm tokens"))
    assert not other.record(_record("b2", confidence=0.1, stopped_by="budget: rounds")).kept_current
    # A scored run replaces an unscored current.
    scored = store.record(_record("scored", score=0.1, confidence=0.1))
    assert not scored.kept_current and scored.current_run_id == "scored"


def test_set_score_updates_history_and_redecides_current(redis_client: redis.Redis) -> None:
    store = _store(redis_client)
    for run_id in ("a", "b", "c"):
        store.record(_record(run_id))
    assert store.set_score(7, "a", "detection", 0.9).current_run_id == "a"  # scored beats
    outcome = store.set_score(7, "c", "detection", 0.4)
    assert outcome.kept_current and outcome.current_run_id == "a"
    assert store.set_score(7, "b", "detection", 0.95).current_run_id == "b"
    # Re-scoring the current one lower hands the place back.
    assert store.set_score(7, "b", "detection", 0.1).current_run_id == "a"
    scores = {r.run_id: (r.scorer, r.score) for r in store.history(7)}
    assert scores == {"a": ("detection", 0.9), "b": ("detection", 0.1), "c": ("detection", 0.4)}
    current = store.current(7)
    assert current is not None and current.run_id == "a" and current.score == 0.9
    with pytest.raises(ExplanationStoreError, match="no run 'nope' of feature 7"):
        store.set_score(7, "nope", "detection", 0.5)
    with pytest.raises(ExplanationStoreError, match="invalid score"):
        store.set_score(7, "a", "detection", float("nan"))


def test_recording_a_run_twice_is_idempotent(redis_client: redis.Redis) -> None:
    store = _store(redis_client)
    store.record(_record("a"))
    store.set_score(7, "a", "detection", 0.8)
    again = store.record(_record("a"))  # an at-least-once retry, unscored
    assert again.duplicate and not again.kept_current and again.current_run_id == "a"
    store.record(_record("b", score=0.3))
    assert store.record(_record("b", score=0.3)).duplicate
    history = store.history(7)
    assert [r.run_id for r in history] == ["a", "b"]
    assert history[0].score == 0.8  # the retry did not wipe the score


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("scored", [True, False])
def test_concurrent_writers_leave_one_consistent_current(
    redis_server: Any, scored: bool, seed: int
) -> None:
    subject = _subject()
    rng = random.Random(seed)
    scores = rng.sample(range(1000), 20)
    records = [
        _record(
            f"run-{i}",
            score=scores[i] / 1000 if scored else None,
            confidence=rng.random(),
            stopped_by=rng.choice(["decided", "budget: rounds"]),
        )
        for i in range(20)
    ]
    barrier = threading.Barrier(len(records))
    errors: list[BaseException] = []

    def write(record: ExplanationRecord) -> None:
        client = redis_server.client()  # one client per writer, as separate workers have
        try:
            barrier.wait()
            ExplanationStore(client, subject).record(record)
        except BaseException as error:  # reported below; a thread would swallow it
            errors.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=write, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    client = redis_server.client()
    try:
        store = ExplanationStore(client, subject)
        history = store.history(7)
        assert sorted(r.run_id for r in history) == sorted(r.run_id for r in records)
        current = store.current(7)
        assert current is not None
        assert current == current_of(history)  # what recording in that order gives
        if scored:
            assert current.score == max(scores) / 1000
    finally:
        client.delete(*client.keys(f"glossator:explanation:{subject.key}:*"))
        client.close()


def test_malformed_record_names_the_key(redis_client: redis.Redis) -> None:
    store = _store(redis_client)
    store.record(_record("a"))
    redis_client.set(store.current_key(7), "{not json")
    with pytest.raises(ExplanationStoreError, match=f"{store.current_key(7)} is malformed"):
        store.current(7)
    with pytest.raises(ExplanationStoreError, match="malformed"):
        store.record(_record("b"))
    redis_client.hset(store.runs_key(7), "a", '{"version": 1, "run_id": "a"}')
    with pytest.raises(ExplanationStoreError, match=f"{store.runs_key(7)} field a is malformed"):
        store.history(7)


def test_newer_record_version_is_refused(redis_client: redis.Redis) -> None:
    store = _store(redis_client)
    store.record(_record("a"))
    future = _record("a").model_copy(update={"version": 99})
    redis_client.set(store.current_key(7), future.model_dump_json())
    with pytest.raises(ExplanationStoreError, match="version 99"):
        store.current(7)


def test_dead_redis_is_a_clear_error_without_the_password() -> None:
    client = redis.Redis.from_url("redis://:hunter2@127.0.0.1:1/0", socket_connect_timeout=1)
    store = ExplanationStore(client, _subject())
    with pytest.raises(ExplanationStoreError, match=r"unreachable at redis://127\.0\.0\.1:1") as e:
        store.record(_record("a"))
    assert "hunter2" not in str(e.value)
    for call in (lambda: store.current(7), lambda: store.history(7), store.features):
        with pytest.raises(ExplanationStoreError, match="unreachable"):
            call()
    client.close()


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="score and scorer go together"):
        ExplanationRecord(
            explanation=_record("x").explanation, run_id="x", explainer="rules", score=0.5
        )


def test_works_with_a_decoding_client(redis_server: Any) -> None:
    client = redis_server.client(decode_responses=True)
    try:
        store = ExplanationStore(client, _subject())
        store.record(_record("a", feature=2))
        store.set_score(2, "a", "detection", 0.5)
        assert [r.run_id for r in store.history(2)] == ["a"] and store.features() == [2]
    finally:
        client.delete(*client.keys(f"glossator:explanation:{store.subject.key}:*"))
        client.close()

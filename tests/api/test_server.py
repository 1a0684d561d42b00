"""The HTTP service over real HTTP (uvicorn on loopback) and real Redis, on planted
features: health, features, activations, agent runs streamed as Server-Sent Events,
keys and limits."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from runtime.apikeys import ApiKeyStore, RunSlots
from runtime.redis_server import EmbeddedRedis, open_client
from tests.server_fixtures import api_key, read_stream, serving, settings_of


def test_health_ready_and_the_openapi_schema(service: str) -> None:
    assert httpx.get(f"{service}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{service}/ready").json()
    assert ready["status"] == "ready" and ready["features"] == 25
    assert ready["reasoner"] == "rules" and ready["subject"]["hookpoint"] == "planted"
    docs = httpx.get(f"{service}/docs").text  # served whole from here: no CDN
    script = next(p for p in docs.split('"') if p.endswith("swagger-ui-bundle.js"))
    assert script.startswith("/") and httpx.get(f"{service}{script}").status_code == 200
    paths = httpx.get(f"{service}/openapi.json").json()["paths"]
    assert {"/features", "/features/{feature}", "/activations", "/runs/{run_id}/events"} <= set(
        paths
    )


def test_features_are_listed_filtered_and_shown(service: str) -> None:
    page = httpx.get(f"{service}/features", params={"limit": 5}).json()
    assert page["total"] == 25 and len(page["items"]) == 5
    assert [row["name"] for row in page["items"]][:2] == ["word-love", "word-computer"]
    silent = httpx.get(f"{service}/features", params={"fired": False, "limit": 100}).json()
    firing = httpx.get(f"{service}/features", params={"fired": True, "limit": 100}).json()
    assert silent["total"] + firing["total"] == 25 and silent["total"] > 0
    assert all(row["fired_tokens"] == 0 for row in silent["items"])
    densities = sorted(row["density"] for row in firing["items"])
    cut = densities[len(densities) // 2]
    dense = httpx.get(f"{service}/features", params={"min_density": cut, "limit": 100}).json()
    assert dense["total"] == sum(d >= cut for d in densities) < firing["total"]
    assert all(row["density"] >= cut for row in dense["items"])
    second = httpx.get(f"{service}/features", params={"offset": 5, "limit": 5}).json()
    assert second["items"][0]["feature"] == 5

    detail = httpx.get(f"{service}/features/word-love").json()
    assert detail["feature"] == 0 and detail["name"] == "word-love"
    top = detail["evidence"]["top"]
    assert top and all("lov" in "".join(ex["tokens"]).lower() for ex in top)
    assert httpx.get(f"{service}/features/0").json()["name"] == "word-love"
    for unknown in ("25", "no-such-feature", "-1"):
        missing = httpx.get(f"{service}/features/{unknown}")
        assert missing.status_code == 404 and "0..24" in missing.text, missing.text


def test_activations_of_chosen_features_and_of_the_top_ones(service: str) -> None:
    body = {"texts": ["I love the red car", "nothing here"], "features": [0, 2]}
    reply = httpx.post(f"{service}/activations", json=body)
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["texts"]
    by_token = {t["text"].strip(): t["activations"] for t in first["tokens"]}
    assert by_token["love"][0] > 0 and by_token["love"][1] == 0
    assert by_token["red"][1] > 0 and by_token["red"][0] == 0
    assert all(a == [0.0, 0.0] for a in (t["activations"] for t in second["tokens"]))
    top = httpx.post(f"{service}/activations", json={"texts": ["I love it"], "top": 1}).json()
    love = next(t for t in top["texts"][0]["tokens"] if t["text"].strip() == "love")
    assert love["top"][0]["feature"] == 0


def test_bad_activation_requests_get_a_clear_4xx(planted_env: dict[str, str]) -> None:
    settings = settings_of(planted_env, max_text_chars=50, max_texts_per_request=2)
    with serving(settings) as url:
        cases = [
            ({"texts": ["x" * 51]}, 413, "limit is 50"),
            ({"texts": ["a", "b", "c"]}, 413, "limit is 2"),
            ({"texts": ["  "]}, 422, "text 0 is empty"),
            ({"texts": []}, 422, "texts"),
            ({"texts": ["ok"], "features": [99]}, 404, "0..24"),
            ({"texts": ["ok"], "top": 0}, 422, "top"),
            ({"texts": "not a list"}, 422, "texts"),
        ]
        for body, status, words in cases:
            reply = httpx.post(f"{url}/activations", json=body)
            assert reply.status_code == status and words in reply.text, (body, reply.text)
        garbage = httpx.post(
            f"{url}/activations", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 422


def test_a_run_streams_its_steps_and_stores_its_explanation(
    service: str, planted_env: dict[str, str]
) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    assert httpx.post(f"{service}/features/word-love/runs").status_code == 401
    bad = httpx.post(f"{service}/features/word-love/runs", headers={"X-API-Key": "glsk_x_y"})
    assert bad.status_code == 401
    started = httpx.post(f"{service}/features/word-love/runs", headers=key, json={"new": True})
    assert started.status_code == 202, started.text
    run = started.json()
    events = read_stream(f"{service}{run['events_url']}")
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds.count("state") >= 5
    final = events[-1][1]
    assert "love" in final["explanation"]["text"] and final["stored"]
    states = [data for kind, data in events if kind == "state"]
    assert states[-1]["explanation"] is not None and any(s["hypotheses"] for s in states)

    shown = httpx.get(f"{service}/runs/{run['run_id']}").json()
    assert shown["status"] == "finished" and shown["state"]["experiments"]
    replay = read_stream(f"{service}{run['events_url']}")  # a finished run replays
    assert [k for k, _ in replay] == kinds
    later = read_stream(
        f"{service}{run['events_url']}", headers={"Last-Event-ID": _id_of(service, run, -2)}
    )
    assert [k for k, _ in later] == ["done"]

    listed = httpx.get(f"{service}/features", params={"explained": True, "q": "love"}).json()
    assert [row["name"] for row in listed["items"]] == ["word-love"]
    detail = httpx.get(f"{service}/features/word-love").json()
    assert detail["explanation"]["run_id"] == run["run_id"] and detail["labels"]
    assert any(r["run_id"] == run["run_id"] for r in detail["runs"])
    assert httpx.get(f"{service}/runs/explain:nope").status_code == 404
    assert httpx.get(f"{service}/runs/explain:nope/events").status_code == 404


def _id_of(service: str, run: dict[str, str], index: int) -> str:
    """The SSE id of the run's event at `index`."""
    with httpx.stream("GET", f"{service}{run['events_url']}", timeout=60) as response:
        ids = [line[3:].strip() for line in response.iter_lines() if line.startswith("id:")]
    return ids[index]


def test_a_key_gets_at_most_its_share_of_concurrent_runs(planted_env: dict[str, str]) -> None:
    with serving(settings_of(planted_env, max_runs_per_key=1)) as url:
        client = open_client(planted_env["GLOSSATOR_REDIS_URL"], "tests")
        info, token = ApiKeyStore(client).create("busy")
        RunSlots(client, 1).acquire(info.id, "elsewhere")  # a run on another server
        headers = {"Authorization": f"Bearer {token}"}
        refused = httpx.post(f"{url}/features/colour-words/runs", headers=headers)
        assert refused.status_code == 429 and "limit is 1" in refused.text
        RunSlots(client, 1).release(info.id, "elsewhere")
        accepted = httpx.post(f"{url}/features/colour-words/runs", headers=headers)
        assert accepted.status_code == 202, accepted.text
        ApiKeyStore(client).revoke(info.id)
        revoked = httpx.post(f"{url}/features/colour-words/runs", headers=headers)
        assert revoked.status_code == 401 and "revoked" in revoked.text
        client.close()


def test_a_benchmark_runs_in_the_service_and_reports_its_summary(
    service: str, planted_env: dict[str, str]
) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    body = {"features": [0, 2], "scorers": ["detection", "truth"], "seed": 7}
    assert httpx.post(f"{service}/bench", json=body).status_code == 401
    bad = httpx.post(f"{service}/bench", json={**body, "scorers": ["vibes"]}, headers=key)
    assert bad.status_code == 422 and "scorers" in bad.text
    started = httpx.post(f"{service}/bench", json=body, headers=key)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    deadline = time.monotonic() + 180
    while (view := httpx.get(f"{service}/bench/{run_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, view
        time.sleep(0.5)
    assert view["status"] == "finished" and view["features_done"] == 2
    cells = view["summary"]["cells"]
    assert cells["agent"]["truth"]["n"] == 2 and cells["agent"]["truth"]["mean"] > 0.9
    assert cells["toptokens"]["detection"]["n"] == 2
    assert run_id in httpx.get(f"{service}/bench").json()
    scores = httpx.get(f"{service}/features/0").json()["scores"]
    mine = {(s["explainer"], s["scorer"]) for s in scores if s.get("bench") == run_id}
    assert mine == {(e, s) for e in ("agent", "toptokens") for s in ("detection", "truth")}
    assert httpx.get(f"{service}/bench/no-such-run").status_code == 404


def test_a_dead_redis_gets_a_clear_503_and_reads_recover(
    planted_env: dict[str, str], tmp_path: Path
) -> None:
    own = EmbeddedRedis(tmp_path / "redis").start()
    with serving(settings_of(planted_env, redis_url=own.url)) as url:
        assert httpx.get(f"{url}/features/word-love").status_code == 200
        own.stop()
        for path in ("/features", "/features/word-love", "/features/0/chat", "/bench"):
            reply = httpx.get(f"{url}{path}")
            assert reply.status_code == 503 and "Redis" in reply.json()["detail"], (
                path,
                reply.text,
            )
        assert httpx.get(f"{url}/ready").status_code == 503
        key = {"Authorization": f"Bearer glsk_0123456789abcdef_{'a' * 43}"}  # well-formed
        assert httpx.post(f"{url}/features/0/runs", headers=key).status_code == 503
        works = httpx.post(f"{url}/activations", json={"texts": ["I love it"], "features": [0]})
        assert works.status_code == 200  # needs no Redis
        own.start()
        assert httpx.get(f"{url}/features/word-love").status_code == 200
    own.stop()

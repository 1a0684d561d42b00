"""POST /steer over real HTTP, on a service of the tiny real Llama and a dictionary whose
feature 2 writes one token's unembedding direction (evidence built by the CLI)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.redis_server import EmbeddedRedis
from tests.browser_fixtures import Tab, unlabelled
from tests.cli_helpers import run_cli
from tests.server_fixtures import api_key, read_stream, serving, settings_of, sse_events
from tests.steering_helpers import TOKEN_FEATURE, saved_token_dictionary

pytestmark = pytest.mark.slow  # builds evidence with `glossator`, serves the tiny model


STEER_ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
def steer_service(
    tiny_llama: Any,
    tiny_llama_dir: Path,
    redis_server: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """The service's URL and the token feature 2 writes."""
    folder = tmp_path_factory.mktemp("steer-service")
    settings, token = saved_token_dictionary(tiny_llama, tiny_llama_dir, folder)
    env = {
        **settings,
        "GLOSSATOR_REDIS_URL": redis_server.url,
        # Anonymous steering spends 8 texts a steered text; these tests send many.
        "GLOSSATOR_ANONYMOUS_TEXTS_PER_MINUTE": "100000",
    }
    things = ["red fox", "old dog", "blue car", "cat", "tree", "sea"]
    texts = [f"The {things[i % 6]} and the {things[(i + 2) % 6]} went home, note {i}."
             for i in range(30)]  # fmt: skip
    corpus = folder / "texts.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    built = run_cli("evidence", "build", "--corpus", str(corpus), "--no-redis", env=env)
    assert built.returncode == 0, built.stderr
    with serving(settings_of(env), planted=False) as url:
        STEER_ENV.update(env)  # for an API key of this service's Redis
        yield url, token


def test_steer_makes_the_model_say_the_features_token(steer_service: tuple[str, str]) -> None:
    url, token = steer_service
    body = {"feature": TOKEN_FEATURE, "texts": ["The quick brown fox", "Hello there"],
            "strength": 1000, "tokens": 3, "top": 4}  # fmt: skip
    answer = httpx.post(f"{url}/steer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["feature"] == TOKEN_FEATURE and doc["strength"] == 1000 and doc["clamp"] is None
    assert [t["text"] for t in doc["texts"]] == body["texts"]
    for steered in doc["texts"]:
        assert steered["steered_continuation"] == token * 3
        assert token not in steered["clean_continuation"]
        top = steered["promoted"][0]
        assert top["token"] == token and top["steered_prob"] > top["clean_prob"]
        assert len(steered["promoted"]) <= 4


def test_steer_times_clamps_to_a_multiple_of_the_largest_activation(
    steer_service: tuple[str, str],
) -> None:
    url, _ = steer_service
    for feature in range(4):
        detail = httpx.get(f"{url}/features/{feature}", timeout=30).json()
        max_act = detail["evidence"]["stats"]["max_act"]
        answer = httpx.post(f"{url}/steer", json={"feature": feature, "texts": ["Hi"], "times": 3})
        if max_act > 0:
            assert answer.status_code == 200, answer.text
            assert answer.json()["clamp"] == pytest.approx(3 * max_act)
        else:  # a feature that never fired has no largest activation to multiply
            assert answer.status_code == 422 and "never fired" in answer.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"texts": ["Hi"], "strength": 1, "clamp": 2}, 422, "exactly one of strength"),
        ({"texts": ["Hi"]}, 422, "exactly one of strength"),
        ({"texts": ["Hi"], "strength": 1, "tokens": 999}, 422, "tokens"),
        ({"texts": ["  "], "strength": 1}, 422, "text 0 is empty"),
        ({"texts": ["Hi"], "strength": 1, "feature": 9}, 404, "valid indices are 0..3"),
    ],
)
def test_bad_steer_requests_get_a_clear_4xx(
    steer_service: tuple[str, str], body: dict[str, Any], status: int, message: str
) -> None:
    url, _ = steer_service
    answer = httpx.post(f"{url}/steer", json={"feature": TOKEN_FEATURE, **body}, timeout=30)
    assert answer.status_code == status and message in answer.text, answer.text


def test_planted_features_cannot_be_steered(service: str) -> None:
    answer = httpx.post(f"{service}/steer", json={"feature": 0, "texts": ["I love"], "strength": 1})
    assert answer.status_code == 422 and "no output side" in answer.text, answer.text


# -- the feature page's panel ----------------------------------------------------------------


def fired_feature(url: str) -> tuple[int, float]:
    """A feature of the service's dictionary that fired in its evidence, and its max."""
    for feature in range(4):
        max_act = httpx.get(f"{url}/features/{feature}", timeout=30).json()["evidence"]["stats"]
        if max_act["max_act"] > 0:
            return feature, max_act["max_act"]
    raise AssertionError("no feature of the test dictionary fired in its evidence")


def test_the_steering_panel_works_without_javascript(steer_service: tuple[str, str]) -> None:
    url, _ = steer_service
    feature, _ = fired_feature(url)
    body = {"feature": feature, "texts": ["The quick brown fox"], "times": 5}
    expected = httpx.post(f"{url}/steer", json=body, timeout=60).json()["texts"][0]
    params = {"steer_text": "The quick brown fox", "times": "5"}
    page = httpx.get(f"{url}/ui/features/{feature}", params=params, timeout=60)
    assert page.status_code == 200 and 'id="steer-form"' in page.text
    shown = html.unescape(page.text)
    assert f"<strong>{expected['steered_continuation']}</strong>" in shown
    assert f"<strong>{expected['clean_continuation']}</strong>" in shown
    assert "KL" in shown and 'value="5.0"' in page.text
    bad = httpx.get(f"{url}/ui/features/{feature}", params={**params, "times": "nan"}, timeout=60)
    assert bad.status_code == 200 and "finite number" in bad.text  # said on the page


@pytest.mark.browser
def test_the_steering_panel_in_a_browser(steer_service: tuple[str, str], browser: Any) -> None:
    url, _ = steer_service
    feature, _ = fired_feature(url)
    tab = Tab(browser)
    page = tab.page
    page.goto(f"{url}/features/{feature}")
    assert unlabelled(page) == []
    page.keyboard.press("s")
    assert page.evaluate("document.activeElement.id") == "steer-text"
    page.get_by_label("Text to continue, clean and with the feature turned up").fill("Hello")
    page.get_by_label("Clamp to").fill("3")
    page.locator("#steer-run").click()
    page.locator("#steer-result .continuations .steered strong").wait_for()
    assert "KL" in page.locator("#steer-result .summary").inner_text()
    assert page.locator("#steer-result .token-list li").count() > 0
    assert "steer_text=Hello" in page.url and "times=3" in page.url
    tab.shot("feature-steering")
    tab.close()


def test_planted_feature_pages_have_no_steering_panel(service: str) -> None:
    page = httpx.get(f"{service}/ui/features/0", timeout=30)
    assert page.status_code == 200 and 'id="steer-form"' not in page.text


def test_the_chat_says_what_happens_when_it_is_turned_up(
    steer_service: tuple[str, str], redis_server: EmbeddedRedis
) -> None:
    url, _ = steer_service
    key = {"Authorization": f"Bearer {api_key({'GLOSSATOR_REDIS_URL': redis_server.url})}"}
    feature, max_act = fired_feature(url)
    created = httpx.post(f"{url}/features/{feature}/chat", headers=key, json={}, timeout=30)
    assert created.status_code == 201, created.text
    ask = 'what happens if I turn it up 5 times on "The quick brown fox"?'
    with httpx.stream("POST", f"{url}/chat/{created.json()['id']}/messages",
                      json={"text": ask}, headers=key, timeout=120) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        events = list(sse_events(response))
    kinds = [kind for kind, _ in events]
    assert kinds == ["understood", "answer", "done"], events
    assert events[0][1]["intent"] == "steer"
    answer = events[1][1]["text"]
    assert answer.startswith(f"With feature {feature} clamped to 5 times its largest")
    assert f"({5 * max_act:.2f})" in answer and '"The quick brown fox" goes on' in answer
    # The same as POST /steer says, in words.
    body = {"feature": feature, "texts": ["The quick brown fox"], "times": 5, "tokens": 12}
    steered = httpx.post(f"{url}/steer", json=body, timeout=60).json()["texts"][0]
    assert " ".join(steered["steered_continuation"].split()) in answer


def test_a_run_shows_its_steering_experiments(steer_service: tuple[str, str]) -> None:
    """The agent steers an SAE feature after its input side (S1 to propose output claims,
    S2 on other texts to judge them), and the run's page shows both experiments."""
    url, _ = steer_service
    key = {"Authorization": f"Bearer {api_key(STEER_ENV)}"}
    started = httpx.post(f"{url}/features/{TOKEN_FEATURE}/runs", headers=key, json={"new": True})
    assert started.status_code == 202, started.text
    run = started.json()
    events = read_stream(f"{url}{run['events_url']}")
    assert events[-1][0] == "done", events[-1]
    state = httpx.get(f"{url}/runs/{run['run_id']}", timeout=30).json()["state"]
    assert [t["id"] for t in state["output_tests"]] == ["S1", "S2"]
    assert all(t["texts"] and t["clamp"] > 0 for t in state["output_tests"])
    page = httpx.get(f"{url}/runs/{run['run_id']}", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200 and 'id="exp-S1"' in page.text and 'id="exp-S2"' in page.text

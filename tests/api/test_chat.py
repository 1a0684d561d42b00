"""Chat about a planted feature over real HTTP: a thread, test texts and a hypothesis
answered as Server-Sent Events from real probe runs, and the thread read back from a
new server process (as after a restart)."""

from __future__ import annotations

from typing import Any

import httpx

from agent.chat.agent import MAX_ROUNDS
from tests.llama_fixtures import LlamaServer
from tests.server_fixtures import api_key, serving, settings_of, sse_events


def _say(url: str, thread: str, text: str, key: dict[str, str]) -> list[tuple[str, Any]]:
    with httpx.stream(
        "POST", f"{url}/chat/{thread}/messages", json={"text": text}, headers=key, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        return list(sse_events(response))


def test_a_chat_thread_answers_from_experiments_and_survives_a_restart(
    planted_env: dict[str, str],
) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    settings = settings_of(planted_env)
    with serving(settings) as url:
        assert httpx.post(f"{url}/features/word-love/chat").status_code == 401
        created = httpx.post(f"{url}/features/word-love/chat", headers=key, json={})
        assert created.status_code == 201, created.text
        thread = created.json()["id"]

        tested = _say(url, thread, 'test: "I love dogs" and "I like dogs"', key)
        kinds = [kind for kind, _ in tested]
        assert kinds[0] == "understood" and kinds[-1] == "done"
        runs = [data["experiment"] for kind, data in tested if kind == "experiment"]
        fired = {run["text"]: run["outcome"]["fired"] for run in runs}
        assert fired == {"I love dogs": True, "I like dogs": False}

        asked = _say(url, thread, "does it fire on love?", key)
        verdict = next(data["verdict"] for kind, data in asked if kind == "verdict")
        assert verdict["status"] == "confirmed", verdict
        answer = next(data["text"] for kind, data in asked if kind == "answer")
        assert "love" in answer.lower()

        wrong = httpx.post(
            f"{url}/chat/{thread}/messages", json={"text": "   "}, headers=key, timeout=30
        )
        assert wrong.status_code == 422
        missing = httpx.post(
            f"{url}/chat/{'0' * 32}/messages", json={"text": "hi"}, headers=key, timeout=30
        )
        assert missing.status_code == 404

    with serving(settings) as url:  # a new server: the thread is still there
        shown = httpx.get(f"{url}/chat/{thread}").json()
        roles = [m["role"] for m in shown["messages"]]
        assert roles == ["user", "agent", "user", "agent"]
        assert shown["messages"][1]["experiments"] and shown["messages"][3]["verdict"]
        listed = httpx.get(f"{url}/features/word-love/chat").json()
        assert thread in [t["id"] for t in listed]
        assert httpx.get(f"{url}/features/word-computer/chat").json() == []


def test_chat_tests_a_hypothesis_through_llama_cpp(
    planted_env: dict[str, str], llama_server: LlamaServer
) -> None:
    """The openai reasoner in the chat, against a real server (llama.cpp serving the
    shipped SmolLM2-135M): it designs the texts and gives the verdict, which the SSE
    stream carries with the LLM calls the turn cost. A 135M model may fail to reply in
    shape; then the turn ends in an error event that says why, stored in the thread."""
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    settings = settings_of(
        planted_env,
        reasoner="openai",
        llm_base_url=llama_server.base_url,
        llm_model=llama_server.model,
        llm_timeout=300,  # SmolLM2 on 2 busy cores can take minutes a reply
    )
    with serving(settings) as url:
        created = httpx.post(f"{url}/features/word-love/chat", headers=key, json={})
        assert created.status_code == 201, created.text
        thread = created.json()["id"]
        events = _say(url, thread, "hypothesis: it fires on the word love", key)
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "understood" and kinds[-1] in ("done", "error"), kinds
        if kinds[-1] == "error":
            error = events[-1][1]
            assert "gave no valid" in error["error"] and error["message"] is not None
        else:
            reply = events[-1][1]["message"]
            status = reply["verdict"]["status"]
            assert reply["experiments"] and status in ("confirmed", "refuted", "undecided")
            calls = reply["cost"]["llm_calls"] + reply["cost"]["llm_cached_calls"]
            assert calls % 2 == 0 and 2 <= calls <= 2 * MAX_ROUNDS  # design + analyze a round
            assert all(e["outcome"] is not None for e in reply["experiments"])
        shown = httpx.get(f"{url}/chat/{thread}", headers=key).json()
        assert [m["role"] for m in shown["messages"]] == ["user", "agent"]

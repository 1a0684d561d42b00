"""The web UI, end to end: the real service (uvicorn on loopback, planted features, real
Redis) in a real headless Chromium (Debian's `chromium`, driven by Playwright). Search
and sort the features with the keyboard, open one, try a text and see its tokens
highlighted, chat and see the agent's steps stream in, start a run and see its
hypotheses update, read a benchmark report. Screenshots (light and dark) go to
test-artifacts/web/. The pages also work, and are labelled, without JavaScript."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.web.views import num
from tests.browser_fixtures import Tab, unlabelled, wait_for
from tests.server_fixtures import api_key, read_stream, serving, settings_of

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def web(planted_env: dict[str, str]) -> Iterator[str]:
    with serving(settings_of(planted_env)) as url:
        yield url


@pytest.fixture(scope="module")
def token(planted_env: dict[str, str]) -> str:
    return api_key(planted_env, "web-ui")


@pytest.fixture(scope="module")
def explained(web: str, token: str) -> str:
    """word-love explained by a real agent run (through the API); its run id."""
    key = {"Authorization": f"Bearer {token}"}
    started = httpx.post(f"{web}/features/word-love/runs", headers=key, json={"new": True})
    assert started.status_code == 202, started.text
    events = read_stream(f"{web}{started.json()['events_url']}")
    assert events[-1][0] == "done", events[-1]
    return str(started.json()["run_id"])


# -- without JavaScript --------------------------------------------------------------------


def test_pages_work_without_javascript_and_the_api_keeps_its_json(web: str, token: str) -> None:
    listing = httpx.get(f"{web}/", headers=HTML)
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
    for label in ('<label for="search">Search explanations</label>', 'id="features-table"'):
        assert label in listing.text
    assert listing.text.count('<tr id="row-') == 25
    assert 'aria-sort="ascending"' in listing.text  # sorted by feature

    page = httpx.get(f"{web}/features/word-love", headers=HTML)
    assert page.status_code == 200 and "Feature 0" in page.text
    for heading in (
        "Explanation",
        "Try your own text",
        "Chat about this feature",
        "Top contexts",
        "Quantile samples",
        "Activation histogram",
        "Logit lens",
        "Similar features",
        "Agent runs",
    ):
        assert f">{heading}</h2>" in page.text, heading
    for label in ('for="try-text"', 'for="chat-input"', 'for="run-rounds"', 'for="api-key"'):
        assert label in page.text
    assert "<svg" in page.text and "<rect" in page.text  # the histogram
    assert 'class="tok"' in page.text and "<mark" in page.text  # token heat
    assert page.headers["vary"] == "Accept"

    tried = httpx.get(f"{web}/features/0", params={"text": "I love you"}, headers=HTML)
    result = tried.text.split('id="try-result"')[1].split("</section>")[0]
    marked = re.findall(r'<mark class="tok"[^>]*>([^<]*)</mark>', result)
    assert [m.strip() for m in marked] == ["love"], marked

    # The same URLs still give JSON to any client that does not ask for HTML.
    assert httpx.get(f"{web}/features/0").json()["name"] == "word-love"
    assert isinstance(httpx.get(f"{web}/bench").json(), list)
    assert httpx.get(f"{web}/bench", headers=HTML).text.count("<h1>Benchmarks</h1>") == 1

    missing = httpx.get(f"{web}/features/no-such-feature", headers=HTML)
    assert missing.status_code == 404 and "0..24" in missing.text and "<h1>" in missing.text
    assert httpx.get(f"{web}/runs/explain:nope", headers=HTML).status_code == 404
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        served = httpx.get(f"{web}/static/{asset}")
        assert served.status_code == 200 and kind in served.headers["content-type"]
    assert "http" not in httpx.get(f"{web}/static/style.css").text  # nothing from elsewhere

    # Text from users is escaped, never markup.
    key = {"Authorization": f"Bearer {token}"}
    title = "<script>alert(1)</script>"
    assert httpx.post(f"{web}/features/2/chat", headers=key, json={"title": title}).is_success
    shown = httpx.get(f"{web}/features/2", headers=HTML).text
    assert title not in shown and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown


def test_pages_take_the_key_from_the_cookie_where_reads_need_one(
    planted_env: dict[str, str], token: str
) -> None:
    with serving(settings_of(planted_env, read_requires_key=True)) as url:
        refused = httpx.get(f"{url}/features/0", headers=HTML)
        assert refused.status_code == 401 and "needs an API key" in refused.text
        assert "<h1>An API key is needed</h1>" in refused.text
        wrong = httpx.get(f"{url}/", headers=HTML, cookies={"glossator_key": "glsk_0_nope"})
        assert wrong.status_code == 401
        cookie = {"glossator_key": token}
        for path in ("/", "/features/0", "/bench"):
            shown = httpx.get(f"{url}{path}", headers=HTML, cookies=cookie)
            assert shown.status_code == 200, (path, shown.text[:300])
        assert httpx.get(f"{url}/features/0", cookies=cookie).status_code == 401  # API: header


def test_the_features_api_sorts_by_each_column(web: str, explained: str) -> None:
    def listed(**params: Any) -> list[dict[str, Any]]:
        page = httpx.get(f"{web}/features", params={"limit": 500, **params})
        assert page.status_code == 200, page.text
        assert page.json()["total"] == 25
        items: list[dict[str, Any]] = page.json()["items"]
        return items

    assert [r["feature"] for r in listed(order="desc")] == list(range(24, -1, -1))
    for column in ("density", "max_act"):
        down = [r[column] for r in listed(sort=column, order="desc")]
        assert down == sorted(down, reverse=True) and down[0] > down[-1]
        up = listed(sort=column)
        assert [r[column] for r in up] == sorted(r[column] for r in up)
        ties = [r["feature"] for r in up if r[column] == 0]
        assert ties == sorted(ties)  # ties in feature order
    by_confidence = listed(sort="confidence", order="desc")
    assert by_confidence[0]["explanation"] is not None  # explained first, the rest after
    assert by_confidence[-1]["explanation"] is None
    assert listed(sort="score")[0]["feature"] == 0  # nothing scored: feature order
    bad = httpx.get(f"{web}/features", params={"sort": "vibes"})
    assert bad.status_code == 422 and "sort" in bad.text


# -- in the browser --------------------------------------------------------------------


def test_search_sort_and_open_a_feature_with_the_keyboard(
    web: str, tab: Tab, explained: str
) -> None:
    page = tab.page
    page.goto(f"{web}/")
    rows = page.locator("#features-table tbody tr")
    assert rows.count() == 25
    assert unlabelled(page) == []
    tab.shot("browser-light")

    page.keyboard.press("/")
    search = page.get_by_label("Search explanations")
    assert page.evaluate("document.activeElement.id") == "search"
    search.type("love")
    wait_for(page, "!document.getElementById('count').textContent.includes('of 25')")
    assert rows.first.get_attribute("id") == "row-0"
    assert all("love" in text.lower() for text in rows.all_inner_texts())
    assert "q=love" in page.url
    page.keyboard.press("ArrowDown")  # from the search box into the table
    assert page.evaluate("document.activeElement.id") == "row-0"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/features/0$"))
    assert page.get_by_role("heading", level=1).inner_text().startswith("Feature 0")

    page.goto(f"{web}/")
    page.get_by_role("link", name=re.compile("^Density")).click()
    wait_for(
        page, "document.querySelector('th[aria-sort=descending]')?.textContent.includes('Density')"
    )
    densities = [float(d) for d in rows.evaluate_all("rs => rs.map(r => r.dataset.density)")]
    assert densities == sorted(densities, reverse=True) and densities[0] > densities[-1]
    assert "sort=density" in page.url
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("j")
    second = rows.nth(1).get_attribute("data-feature")
    assert page.evaluate("document.activeElement.dataset.feature") == second
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/features/{second}$"))

    page.goto(f"{web}/")
    page.get_by_label("Show").select_option("silent")
    wait_for(page, "document.querySelector('#count').textContent.includes('of 10')")
    assert "never fired" in rows.first.inner_text()

    page.keyboard.press("?")
    assert page.get_by_role("dialog", name="Keyboard shortcuts").is_visible()
    page.keyboard.press("Escape")


def test_a_feature_page_shows_its_evidence_and_the_activations_on_a_typed_text(
    web: str, browser: Any, explained: str
) -> None:
    for scheme in ("light", "dark"):
        tab = Tab(browser, scheme)
        page = tab.page
        page.goto(f"{web}/features/word-love")
        assert "love" in page.locator("#explanation .gloss").inner_text()
        assert page.locator("#explanation .experiment").count() >= 1  # its evidence
        href = page.locator("#explanation a.exp-id").first.get_attribute("href")
        assert href is not None and href.startswith(f"/runs/{explained}#exp-E")
        assert page.locator("#top mark.tok").count() >= 10
        assert page.locator("#histogram svg rect").count() > 0
        assert unlabelled(page) == []

        page.keyboard.press("t")
        assert page.evaluate("document.activeElement.id") == "try-text"
        page.get_by_label("Text to run through the model").fill("I really love my old dog")
        page.keyboard.press("Control+Enter")
        marks = page.locator("#try-result mark.tok")
        marks.first.wait_for()
        assert [m.strip() for m in marks.all_inner_texts()] == ["love"]
        label = marks.first.get_attribute("aria-label") or ""
        assert re.fullmatch(r" ?love \([0-9.]+\)", label), label
        assert "max" in page.locator("#try-result .summary").inner_text()
        assert "text=I+really+love" in page.url  # the URL shows the same result reloaded
        if scheme == "dark":
            background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
            assert background == "rgb(17, 19, 22)", background
        tab.shot(f"feature-{scheme}")
        tab.close()


def test_the_theme_toggle_and_the_key_dialog(web: str, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{web}/")
    page.get_by_role("button", name=re.compile("Colour theme")).click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    page.get_by_role("button", name=re.compile("Colour theme")).click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
    tab.shot("browser-dark")
    page.get_by_role("button", name=re.compile("API key")).click()
    page.get_by_role("textbox", name="API key").fill("not a key!")
    page.get_by_role("button", name="Save key").click()
    assert "does not look like a key" in page.locator("#key-note").inner_text()
    page.get_by_role("textbox", name="API key").fill("glsk_0123456789abcdef_nope")
    page.get_by_role("button", name="Save key").click()
    wait_for(page, "document.getElementById('key-note').textContent.includes('refused')")
    page.keyboard.press("Escape")
    assert page.locator("#key-state").inner_text() == "none"


def test_a_key_left_in_local_storage_moves_into_the_httponly_cookie(
    web: str, browser: Any, token: str
) -> None:
    tab = Tab(browser)
    tab.context.add_init_script(f"localStorage.setItem('glossator.key', {token!r})")
    page = tab.page
    page.goto(f"{web}/")  # as an earlier version of the UI left it
    wait_for(page, "document.getElementById('key-state').textContent === 'set'")
    assert page.evaluate("localStorage.getItem('glossator.key')") is None
    assert token not in page.evaluate("document.cookie")
    (cookie,) = [c for c in tab.context.cookies() if c["name"] == "glossator_key"]
    assert cookie["value"] == token and cookie["httpOnly"]
    page.reload()  # the page itself now says a key is saved
    assert page.locator("#key-state").inner_text() == "set"
    page.get_by_role("button", name=re.compile("API key")).click()
    page.get_by_role("button", name="Forget key").click()
    wait_for(page, "document.getElementById('key-state').textContent === 'none'")
    assert not [c for c in tab.context.cookies() if c["name"] == "glossator_key"]
    tab.close()


def test_a_chat_streams_the_agents_steps(web: str, tab: Tab, token: str) -> None:
    page = tab.page
    page.goto(f"{web}/features/word-love")
    message = page.get_by_label("Message", exact=True)
    message.fill("does it fire on love?")
    message.press("Enter")
    error = page.locator("#chat-log .chat-error")
    error.wait_for()
    assert "Not sent. This needs an API key" in error.inner_text()  # a 401, said plainly
    assert message.input_value() == "does it fire on love?"  # kept, to send again

    page.get_by_role("button", name=re.compile("API key")).click()
    page.get_by_role("textbox", name="API key").fill(token)
    page.get_by_role("button", name="Save key").click()
    wait_for(page, "document.getElementById('key-state').textContent === 'set'")
    # The server keeps the key in a cookie no script can read, and nowhere else.
    assert token not in page.evaluate("document.cookie + JSON.stringify(localStorage)")
    (cookie,) = [c for c in tab.context.cookies() if c["name"] == "glossator_key"]
    assert cookie["value"] == token and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    page.evaluate(
        """() => {
            window.seen = [];
            new MutationObserver(records => records.forEach(r => r.addedNodes.forEach(n => {
                if (n.classList) window.seen.push(n.className.split(' ').slice(0, 2).join(' '));
            }))).observe(document.getElementById('chat-log'), {childList: true, subtree: true});
        }"""
    )
    page.keyboard.press("Escape")
    page.keyboard.press("c")
    assert page.evaluate("document.activeElement.id") == "chat-input"
    message.fill('test: "I love dogs" and "I like dogs"')
    message.press("Enter")
    page.locator("#chat-log .msg-agent[data-done]").last.wait_for()
    seen = page.evaluate("window.seen")
    steps = [s for s in seen if s.startswith("step") or s == "answer"]
    assert steps[0] == "step step-understood" and steps[-1] == "answer", seen
    assert steps.count("step step-experiment") == 2, seen
    reply = page.locator("#chat-log .msg-agent").last
    experiments = reply.locator(".step-experiment")
    assert experiments.nth(0).locator("mark.tok").inner_text().strip() == "love"
    assert experiments.nth(1).locator("mark.tok").count() == 0
    assert "fired" in experiments.nth(0).inner_text()
    page.locator("#chat").scroll_into_view_if_needed()
    tab.shot("chat-light", full_page=False)
    page.emulate_media(color_scheme="dark")
    tab.shot("chat-dark", full_page=False)
    page.emulate_media(color_scheme="light")

    page.reload()  # the thread is kept: choose it and read it back
    page.get_by_label("Thread").select_option(index=1)
    page.locator("#chat-log .msg-agent .step-experiment").first.wait_for()
    assert page.locator("#chat-log .msg").count() >= 2


def test_a_run_started_in_the_browser_shows_its_hypotheses_as_they_update(
    web: str, browser: Any, token: str
) -> None:
    tab = Tab(browser, key=token, url=web)
    page = tab.page
    page.goto(f"{web}/features/colour-words")
    page.get_by_label("Max rounds").fill("6")
    page.get_by_label("a new run (instead of resuming)").check()
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/explain:"))
    state = page.locator("#run-state")
    wait_for(
        page,
        "document.getElementById('run-state').textContent.trim() === 'finished'",
        timeout_s=90,
    )
    updates = int(page.locator("#live").get_attribute("data-updates") or 0)
    assert updates >= 2, updates  # the page followed the run's steps
    hypotheses = page.locator("#hypotheses > li")
    assert hypotheses.count() >= 1
    statuses = hypotheses.evaluate_all("hs => hs.map(h => h.dataset.status)")
    assert "confirmed" in statuses, statuses
    assert page.locator("#experiments mark.tok").count() >= 1
    assert "red" in page.locator("#run-explanation .gloss").inner_text().lower()
    assert state.inner_text() == "finished"
    wait_for(page, "!document.querySelector('.flash')")  # the update highlight
    tab.shot("run-light")
    page.emulate_media(color_scheme="dark")
    tab.shot("run-dark")
    tab.close()


def test_a_benchmark_report_shows_its_table_and_plots(web: str, tab: Tab, token: str) -> None:
    key = {"Authorization": f"Bearer {token}"}
    body = {"features": [0, 2], "explainers": ["toptokens"], "scorers": ["detection", "truth"]}
    started = httpx.post(f"{web}/bench", json=body, headers=key)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{web}/bench/{run_id}").json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)

    page = tab.page
    page.goto(f"{web}/bench")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/bench/.+"))
    table = page.locator("#scores-table")
    assert "toptokens" in table.inner_text() and "truth" in table.inner_text()
    assert re.match(r"[0-9.]+ \[[0-9.]+, [0-9.]+\] n=2", table.locator("td").first.inner_text())
    # Detection recall by activation quantile: a line per explainer, its numbers in a table.
    recall = httpx.get(f"{web}/bench/{run_id}").json()["summary"]["recall_by_quantile"]
    assert set(recall) == {"toptokens"}
    quantiles = sorted(recall["toptokens"], key=int)
    assert len(quantiles) > 1
    curves = page.locator("#recall-chart svg g.curve")
    assert curves.count() == 1 and curves.first.get_attribute("data-explainer") == "toptokens"
    assert curves.first.locator("circle").count() == len(quantiles)
    head = page.locator("#recall-table thead th").all_inner_texts()
    assert head[1:] == [f"q{q}" for q in quantiles]
    rows = page.locator("#recall-table tbody tr")
    assert rows.count() == 1 and rows.first.locator("th").inner_text() == "toptokens"
    shown = rows.first.locator("td").all_inner_texts()
    assert shown == [num(recall["toptokens"][q]) for q in quantiles]
    images = page.locator(".plots img")
    assert images.count() == 2
    wait_for(
        page,
        "[...document.querySelectorAll('.plots img')].every(i => i.complete && i.naturalWidth)",
        timeout_s=60,
    )
    tab.shot("bench-light")

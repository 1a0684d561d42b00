"""Security headers and the web UI's key cookie, over real HTTP (uvicorn on loopback,
planted features, real Redis). Every answer (pages, JSON, static files, errors, the
body guard's refusals) carries a CSP, X-Frame-Options: DENY, nosniff and a
Referrer-Policy; the UI's key lives in an HttpOnly, SameSite=Strict cookie that stands
for the key only on the UI's own requests."""

from __future__ import annotations

import httpx

from tests.server_fixtures import api_key

HTML = {"Accept": "text/html"}
UI = {"X-Glossator-UI": "1"}


def _assert_secured(response: httpx.Response) -> None:
    headers = response.headers
    policy = headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, policy
    assert "object-src 'none'" in policy
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "same-origin"


def test_every_kind_of_answer_carries_the_security_headers(service: str) -> None:
    answers = [
        httpx.get(f"{service}/", headers=HTML),
        httpx.get(f"{service}/features/word-love", headers=HTML),
        httpx.get(f"{service}/features/word-love"),
        httpx.get(f"{service}/static/app.js"),
        httpx.get(f"{service}/health"),
        httpx.get(f"{service}/features/no-such-feature"),
        httpx.post(f"{service}/activations", json={"texts": "not a list"}),
        httpx.post(f"{service}/activations", content=b'{"texts": ["\\udce9"]}'),
        httpx.post(f"{service}/activations", content=b"x" * (5 * 1024 * 1024)),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 404, 422, 422, 413]
    for answer in answers:
        _assert_secured(answer)
    page_policy = answers[0].headers["content-security-policy"]
    assert "script-src 'self';" in page_policy and "unsafe-inline" not in page_policy.replace(
        "style-src-attr 'unsafe-inline'", ""
    )
    docs = httpx.get(f"{service}/docs")  # Swagger UI starts from an inline script
    _assert_secured(docs)
    assert "script-src 'self' 'unsafe-inline'" in docs.headers["content-security-policy"]


def test_the_key_cookie_is_httponly_and_only_the_uis_requests_use_it(
    service: str, planted_env: dict[str, str]
) -> None:
    token = api_key(planted_env, "cookie")
    refused = httpx.post(f"{service}/ui/key", json={"key": token})  # no UI header
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    wrong = httpx.post(f"{service}/ui/key", json={"key": "glsk_0123456789abcdef_x"}, headers=UI)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers

    saved = httpx.post(f"{service}/ui/key", json={"key": token}, headers=UI)
    assert saved.status_code == 200 and saved.json()["saved"] is True
    cookie = saved.headers["set-cookie"]
    assert cookie.startswith(f"glossator_key={token};")
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain http here; Secure when served over https

    jar = {"glossator_key": token}
    chat = f"{service}/features/word-love/chat"
    assert httpx.post(chat, json={}, cookies=jar).status_code == 401  # the cookie alone
    assert httpx.post(chat, json={}, cookies=jar, headers=UI).status_code == 201
    page = httpx.get(f"{service}/", headers=HTML, cookies=jar)
    assert '<span id="key-state">set</span>' in page.text
    assert token not in page.text  # the page says a key is saved, never which

    forgotten = httpx.delete(f"{service}/ui/key", headers=UI, cookies=jar)
    assert forgotten.status_code == 200
    assert 'glossator_key=""' in forgotten.headers["set-cookie"]
    assert "max-age=0" in forgotten.headers["set-cookie"].lower()

"""A request that fails validation gets a 422 whose body is valid JSON, whatever it held:
NaN, infinities and lone surrogates echoed back must not turn it into a 500. A body
holding a lone surrogate is refused before any route sees it, naming the field."""

from __future__ import annotations

import asyncio
import json

from fastapi.exceptions import RequestValidationError

from api.middleware import lone_surrogate
from api.server_errors import _invalid_request, json_safe


def test_echoed_nan_infinity_and_surrogates_stay_a_422() -> None:
    error = RequestValidationError(
        [
            {
                "type": "int_type",
                "loc": ("body", "top"),
                "msg": "not an int",
                "input": float("nan"),
            },
            {"type": "x", "loc": ("body", "k\udce9"), "msg": "bad", "input": float("inf")},
            {"type": "y", "loc": ("body", "texts", 0), "msg": "bad", "input": "caf\udce9"},
        ]
    )
    response = asyncio.run(_invalid_request(None, error))  # type: ignore[arg-type]
    assert response.status_code == 422
    body = json.loads(bytes(response.body).decode("utf-8"))
    assert body["errors"][0]["input"] == "nan" and body["errors"][1]["input"] == "inf"
    assert body["errors"][2]["input"] == "caf\\udce9"
    assert "body.top: not an int" in body["detail"] and "body.k\\udce9: bad" in body["detail"]


def test_json_safe_leaves_plain_values_alone() -> None:
    plain = {"a": [1, 2.5, "text", None, True], "b": {"c": "é"}}
    assert json_safe(plain) == plain
    assert json_safe((float("-inf"),)) == ["-inf"]


def test_a_lone_surrogate_is_found_and_named_wherever_it_is() -> None:
    found = lone_surrogate(b'{"a": {"texts": ["ok", "caf\\udce9"]}, "b": "\\udce9"}')
    assert found is not None
    detail, error = found
    assert error["loc"] == ["body", "a", "texts", 1] and error["type"] == "lone_surrogate"
    assert detail.startswith("invalid request: body.a.texts.1: holds a lone surrogate (\\udce9)")
    json.dumps(error, ensure_ascii=False).encode("utf-8")  # the 422 itself can be sent
    raw = lone_surrogate('{"t": "x\udce9"}'.encode("utf-8", "surrogatepass"))  # raw bytes
    assert raw is not None and raw[1]["loc"] == ["body", "t"]
    key = lone_surrogate(b'{"k\\ud800": 1}')
    assert key is not None and key[1]["loc"] == ["body", "k\\ud800"]


def test_bodies_without_lone_surrogates_pass() -> None:
    assert lone_surrogate(b'{"texts": ["smile \\ud83d\\ude00", "caf\xc3\xa9"]}') is None
    assert lone_surrogate(b'{"texts": ["\\ud83d\\ude00"') is None  # not JSON: the route says
    assert lone_surrogate(b"[" * 100_000 + b'"\\udce9"') is None  # too deep for JSON
    assert lone_surrogate(b"") is None

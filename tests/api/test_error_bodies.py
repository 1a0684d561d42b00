"""A request that fails validation gets a 422 whose body is valid JSON, whatever it held:
NaN, infinities and lone surrogates echoed back must not turn it into a 500."""

from __future__ import annotations

import asyncio
import json

from fastapi.exceptions import RequestValidationError

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

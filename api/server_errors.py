"""One error shape for every 4xx and 5xx the API sends: `{"detail": "<what to fix>"}`,
plus the field-by-field `errors` of a request that failed validation. The OpenAPI
schema documents it for every route, so clients (and schemathesis) can rely on it."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ErrorBody(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None  # per field, for 422 validation errors


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in {
        401: "no valid API key where one is needed",
        404: "no such feature, run, thread or job",
        413: "too many or too long texts, or too many features",
        422: "the request is malformed",
        429: "too many runs going for this API key",
        503: "loading, or Redis is unavailable",
    }.items()
}


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def json_safe(value: Any) -> Any:
    """`value` with what JSON (strict, UTF-8) cannot carry spelled out: NaN and infinities
    as strings, lone surrogates escaped. An echoed bad input must not turn a 422 into a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = json_safe(jsonable_encoder(error.errors()))
    summary = "; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    body = ErrorBody(detail=f"invalid request: {summary}{more}", errors=problems)
    return JSONResponse(body.model_dump(), status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)

"""Property-based tests of the whole HTTP API from its OpenAPI schema (schemathesis):
no request, however malformed, gets a 5xx, and every answer matches the schema. The
service is the real one on loopback, on planted features, with a valid API key sent
with every request so the writing endpoints are exercised too (and without one, so the
401s are too)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from probes.model import prepare_default_model
from runtime.loaders import models_dir
from tests.server_fixtures import api_key, serving, settings_of


@pytest.fixture(scope="module")
def fuzzed_service(planted_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    # A tight run limit: fuzzed runs on real features must not pile up on 2 cores.
    settings = settings_of(planted_env, max_runs_per_key=2)
    # Benchmarks with the local chat model (a judge, the one-shot explainer) need the
    # default model dequantized: done once here, not inside a fuzzed request's timeout.
    prepare_default_model(models_dir(settings))
    with serving(settings) as url:
        yield url, api_key(planted_env, "schemathesis")


def test_no_request_gets_a_server_error(fuzzed_service: tuple[str, str]) -> None:
    url, key = fuzzed_service
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:
        _fuzz(operation, key)


def _fuzz(operation: Any, key: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # every run explores afresh; no examples file in the checkout
    )
    def check(case: Any) -> None:
        headers = {"Authorization": f"Bearer {key}"} if case.method != "GET" else {}
        response = case.call(headers=headers, timeout=60)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    check()

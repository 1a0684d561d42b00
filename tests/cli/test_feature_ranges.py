"""Feature selections (`--features`, and `range` of POST /jobs) are parsed in one place,
identifiers/features.py: negative, reversed and out-of-range ranges, empty samples and
non-numbers are refused with the valid syntax instead of being clipped by Python's
slicing, and planted ids work in lists as they do alone."""

from __future__ import annotations

import httpx
import pytest

from errors import UserError
from identifiers.features import select_features
from tests.cli_helpers import run_cli
from tests.server_fixtures import api_key, serving, settings_of

N_FEATURES = 4096
ALIVE = [3, 5, 7, 4093, 4094]
NAMES = ["c-animals", "c-food", "c-colours"]


def _refused(spec: str, names: list[str] | None = None) -> str:
    with pytest.raises(UserError) as refused:
        select_features(spec, ALIVE, N_FEATURES, names)
    return str(refused.value)


def test_negative_and_reversed_ranges_are_refused_not_clipped() -> None:
    # Python's slicing took -3:-1 for features 4093-4094 and 10:5 for none at all.
    assert "0:200" in _refused("-3:-1") and "not a feature range" in _refused("-3:-1")
    assert "empty range" in _refused("10:5") and "empty range" in _refused("7:7")
    assert "0..4095" in _refused("4000:5000")
    assert "not a feature range" in _refused("3:x")


def test_empty_samples_and_non_numbers_name_the_valid_syntax() -> None:
    assert "sample:N" in _refused("sample:0")
    assert "sample:N" in _refused("sample:-2") and "sample:N" in _refused("sample:many")
    for spec in ("abc", "3,-1", ",", ""):
        message = _refused(spec)
        assert "sample:8" in message and "int()" not in message, message


def test_well_formed_selections() -> None:
    assert select_features("0:8", ALIVE, N_FEATURES).features == [3, 5, 7]
    assert select_features("4090:", ALIVE, N_FEATURES).features == [4093, 4094]
    assert select_features(" :6 ", ALIVE, N_FEATURES).features == [3, 5]
    listed = select_features("7,3,4,7", ALIVE, N_FEATURES)
    assert listed.features == [7, 3] and listed.silent == [4]
    assert len(select_features("sample:3", ALIVE, N_FEATURES).features) == 3


def test_a_sample_is_drawn_with_the_seed_it_is_given() -> None:
    alive = list(range(0, 400, 2))
    first = select_features("sample:10", alive, 400, seed=1).features
    assert first == select_features("sample:10", alive, 400, seed=1).features  # repeatable
    assert first != select_features("sample:10", alive, 400, seed=2).features  # another sample
    assert set(first) <= set(alive) and len(first) == 10


def test_planted_ids_work_in_lists() -> None:
    chosen = select_features("c-food, c-animals", [0, 1], 3, NAMES)
    assert chosen.features == [1, 0]
    assert select_features("c-colours,0", [0, 1], 3, NAMES).silent == [2]
    assert "c-animals, c-food" in _refused("c-animals,c-fish", NAMES)  # lists the ids


def _one_line_error(result: object) -> str:
    """The stderr of a refused command: exit code 2, one line, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr


def test_the_cli_refuses_bad_selections(planted_env: dict[str, str]) -> None:
    def explain(spec: str) -> str:
        return _one_line_error(
            run_cli("explain", "--planted", f"--features={spec}", env=planted_env)
        )

    assert "not a feature range" in explain("-3:-1")
    assert "empty range" in explain("10:5")
    assert "sample:N" in explain("sample:0")
    assert "give a range (0:200)" in explain("abc")
    # Planted ids in a list are parsed (they failed with "invalid literal for int()");
    # these two never fire in this corpus, so the command stops before queueing a job.
    silent = run_cli("explain", "--planted", "--features", "dunder-names,digits", env=planted_env)
    assert silent.returncode == 2 and "Traceback" not in silent.stderr, silent.stderr
    assert "skipped (never fired in the evidence): dunder-names, digits" in silent.stderr
    assert "none of these features fired" in silent.stderr


def test_the_job_endpoint_shares_the_parser(planted_env: dict[str, str]) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    with serving(settings_of(planted_env)) as url:
        for spec, expected in (("-3:-1", "not a feature range"), ("10:5", "empty range")):
            refused = httpx.post(f"{url}/jobs", json={"range": spec}, headers=key)
            assert refused.status_code == 422 and expected in refused.text, refused.text

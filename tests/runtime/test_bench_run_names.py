"""A benchmark run's name names a folder under DATA_DIR/bench: a name that would leave it
(`..`) is refused by the CLI's and the API's options and by the folder lookup itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.server_bench import BenchRequest
from runtime.bench import BenchOptions, bench_dir
from runtime.bench_options import BenchOptionError, check_run_name
from runtime.settings import Settings

LEAVING = ["..", ".", "...", "a/b", "../x", "", "x" * 65, "caf\udce9", "a b"]


@pytest.mark.parametrize("name", LEAVING)
def test_names_that_are_not_a_plain_folder_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(BenchOptionError, match="run name"):
        check_run_name(name)
    with pytest.raises(ValidationError):
        BenchOptions(features=[1], run=name)
    with pytest.raises(ValidationError):
        BenchRequest.model_validate({"run": name})
    with pytest.raises(BenchOptionError):
        bench_dir(Settings(data_dir=tmp_path), name)


@pytest.mark.parametrize("name", ["my-run", "v1.2_a", "bench-0123abcd", ".hidden", "a..b"])
def test_plain_names_stay_inside_the_bench_folder(name: str, tmp_path: Path) -> None:
    assert check_run_name(name) == name
    assert BenchOptions(features=[1], run=name).run == name
    folder = bench_dir(Settings(data_dir=tmp_path), name)
    assert folder.parent == tmp_path / "bench" and folder.name == name

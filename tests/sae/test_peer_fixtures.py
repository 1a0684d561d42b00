"""glossator against the peer libraries, on files the peers wrote themselves.

Each folder tests/fixtures/peers/<library>/<name>/ holds a tiny SAE (d_in 16, 32
features) that SAELens, EleutherAI sparsify or dictionary_learning built with its own
classes and saved with its own save function, an input batch and what the library's own
code computes from the saved files (expected.safetensors: x, features, decoded, output),
and fixture.json (which class wrote it, which folder holds the SAE).
scripts/peer_fixtures.py wrote them and says how to regenerate them; the peers are not
needed here. manifest.json records the library versions and the fixtures.

glossator reads each with `load_sae` and must agree with the peer to 1e-6 (absolute,
float32): the features of x (dense, and through the sparse codes), the decoding of the
peer's features where the output depends on the codes alone, and the output for x.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sae import SparseCodes, load_sae

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peers"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
FOUND = sorted(
    path.parent.relative_to(FIXTURES).as_posix()
    for path in FIXTURES.glob("*/*/expected.safetensors")
)
ATOL = 1e-6  # issue 17: peer-compatible to 1e-6 in float32


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal to ATOL (absolute); the message names the quantity (and, torch's own part,
    the largest difference)."""
    torch.testing.assert_close(
        actual, expected, rtol=0, atol=ATOL, msg=lambda default: f"{what}: {default}"
    )


def dense(codes: SparseCodes, d_sae: int) -> torch.Tensor:
    values, indices = codes
    return torch.zeros(*values.shape[:-1], d_sae).scatter_add(-1, indices, values)


def test_fixtures_cover_every_library_in_the_manifest() -> None:
    assert FOUND, f"no fixtures under {FIXTURES}; run scripts/peer_fixtures.py"
    found_by_library: dict[str, list[str]] = {}
    for fixture in FOUND:
        library, name = fixture.split("/")
        found_by_library.setdefault(library, []).append(name)
    assert set(found_by_library) == set(MANIFEST["libraries"])
    for library, names in MANIFEST["fixtures"].items():
        assert sorted(names) == found_by_library[library], library


@pytest.mark.parametrize("fixture", FOUND)
def test_glossator_matches_the_peer(fixture: str) -> None:
    folder = FIXTURES / fixture
    info = json.loads((folder / "fixture.json").read_text(encoding="utf-8"))
    expected = load_file(folder / "expected.safetensors")
    x, features = expected["x"], expected["features"]
    sae = load_sae((folder / info["sae"]).resolve())
    assert (sae.d_in, sae.d_sae, sae.d_out) == (
        x.shape[-1],
        features.shape[-1],
        expected["output"].shape[-1],
    )
    assert sae.dtype == torch.float32

    with torch.no_grad():
        close(sae.encode(x), features, "features (encode)")
        codes = sae.encode_sparse(x)
        close(dense(codes, sae.d_sae), features, "features (encode_sparse)")
        close(sae.reconstruct(x)[1], expected["output"], "output (reconstruct)")
        close(sae(x), expected["output"], "output (forward)")
        if sae.decode_needs_input() is None:  # else the peer's decode is not our decode
            close(sae.decode(features), expected["decoded"], "decoded (dense codes)")
            close(sae.decode(codes), expected["decoded"], "decoded (sparse codes)")

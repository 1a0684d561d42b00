"""Explanations written elsewhere, loaded for scoring side by side with ours.

Neuronpedia: its explanation exports hold one object per explanation, with the fields of
its `Explanation` table: `modelId`, `layer` (the SAE id, e.g. "6-res-jb"; its Python
library calls it `source`), `index` (a string of digits), `description`, `typeName`
(the method) and `explanationModelName`. The retired `/api/explanation/export` answered
with a JSON list of them (older clients: `{"explanations": [...]}`); the public dataset
bucket (`v1/<model>/<sae>/explanations/batch-N.jsonl.gz`) holds them as gzipped JSON
lines.

delphi: one file per feature in the run's `explanations/` folder, named
`<module>_latent<N>.txt` (`<module>_feature<N>.txt` from its predecessor
sae-auto-interp), holding the explanation as a JSON string.

Imported explanations cost nothing here (their cost was paid elsewhere and is unknown).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from errors import UserError
from evals.core import Explained

log = logging.getLogger(__name__)

_NEURONPEDIA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_DELPHI_NAME = re.compile(r"(?P<module>.+)_(?:latent|feature)(?P<index>\d+)\.txt")


class ImportedExplanationsError(UserError):
    """An explanation file that cannot be read as the format it claims to be."""


# -- Neuronpedia ----------------------------------------------------------------------


def load_neuronpedia(
    path: str | Path,
    *,
    model_id: str | None = None,
    layer: str | None = None,
    explanation_model: str | None = None,
    type_name: str | None = None,
) -> dict[int, Explained]:
    """Feature index -> explanation, from a Neuronpedia export: a `.json` file (a list of
    explanation objects, or `{"explanations": [...]}`), a `.jsonl` file, either gzipped,
    or a folder of such files (the dataset bucket's batches). Only the explanations whose
    `modelId`, `layer`, `explanationModelName` and `typeName` match the filters given are
    kept; they must all be of one SAE (one modelId and layer), and when a feature still
    has several, the first one read wins (pass the filters to choose). Each is named
    "neuronpedia:<explanationModelName>" ("neuronpedia" without one).
    """
    filters = {
        "modelId": model_id,
        "layer": layer,
        "explanationModelName": explanation_model,
        "typeName": type_name,
    }
    wanted = {k: v for k, v in filters.items() if v is not None}
    out: dict[int, Explained] = {}
    seen: dict[tuple[str, str], int] = {}  # explanations per (modelId, layer), for errors
    kept: set[tuple[str, str]] = set()
    duplicates = 0
    for where, record in _neuronpedia_records(Path(path)):
        fields = {k: _field(record, k, where) for k in filters}
        pair = (str(fields["modelId"]), str(fields["layer"]))
        seen[pair] = seen.get(pair, 0) + 1
        if any(fields[k] != v for k, v in wanted.items()):
            continue
        kept.add(pair)
        index = _index(record, where)
        if index in out:
            duplicates += 1
            continue
        model = fields["explanationModelName"]
        out[index] = Explained(
            feature=index,
            explainer=f"neuronpedia:{model}" if model else "neuronpedia",
            text=_description(record, where),
        )
    if duplicates:
        log.warning(
            "%s: %d features had several explanations; kept the first of each", path, duplicates
        )
    if not out:
        raise ImportedExplanationsError(_nothing_matched(Path(path), wanted, seen))
    if len(kept) > 1:  # their feature indices overlap: one SAE at a time
        shown = ", ".join(f"{m}/{sae}" for m, sae in sorted(kept))
        raise ImportedExplanationsError(
            f"{path}: explanations of several SAEs (modelId/layer {shown}); "
            "pass model_id= and layer= to pick one"
        )
    return out


def _neuronpedia_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for every explanation object, `where` naming file and record."""
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.name.endswith(_NEURONPEDIA_SUFFIXES)), key=_natural
        )
        if not files:
            raise ImportedExplanationsError(
                f"{path}: no Neuronpedia export files "
                f"({', '.join(_NEURONPEDIA_SUFFIXES)}) in this folder"
            )
        for file in files:
            yield from _neuronpedia_records(file)
        return
    if not path.name.endswith(_NEURONPEDIA_SUFFIXES):
        raise ImportedExplanationsError(
            f"{path}: not a Neuronpedia export (expected {', '.join(_NEURONPEDIA_SUFFIXES)})"
        )
    text = _read_text(path)
    if ".jsonl" in path.name:
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                where = f"{path}, line {lineno}"
                yield where, _object(_parse(line, where), where)
        return
    data = _parse(text, str(path))
    if isinstance(data, dict) and isinstance(data.get("explanations"), list):
        data = data["explanations"]
    if not isinstance(data, list):
        raise ImportedExplanationsError(
            f'{path}: expected a list of explanation objects or {{"explanations": [...]}}, '
            f"found a JSON {type(data).__name__}"
        )
    for i, item in enumerate(data):
        where = f"{path}, record {i}"
        yield where, _object(item, where)


def _field(record: dict[str, Any], key: str, where: str) -> str | None:
    """An optional text field (`layer` may be spelled `source`)."""
    value = record.get(key)
    if value is None and key == "layer":
        value = record.get("source")
    if value is not None and not isinstance(value, str):
        raise ImportedExplanationsError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _index(record: dict[str, Any], where: str) -> int:
    value = record.get("index")
    # Neuronpedia stores the index as a string of digits; accept a plain integer too.
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    ):
        shown = "no index" if value is None else f"index {value!r}"
        raise ImportedExplanationsError(
            f"{where}: {shown}; each explanation needs the feature's index, a whole number >= 0"
        )
    index = int(value)
    if index < 0:
        raise ImportedExplanationsError(f"{where}: negative index {index}")
    return index


def _description(record: dict[str, Any], where: str) -> str:
    value = record.get("description")
    if not isinstance(value, str) or not value.strip():
        shown = "no description" if value is None else f"description {value!r}"
        raise ImportedExplanationsError(f"{where}: {shown}; the explanation text must be non-empty")
    return value.strip()


def _nothing_matched(path: Path, wanted: dict[str, str], seen: dict[tuple[str, str], int]) -> str:
    if not seen:
        return f"{path}: the export holds no explanations"
    found = ", ".join(f"{m}/{sae} ({n})" for (m, sae), n in sorted(seen.items())[:8])
    asked = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
    return f"{path}: no explanation matches {asked}; the export holds modelId/layer {found}"


# -- delphi ---------------------------------------------------------------------------


def load_delphi(folder: str | Path, *, module: str | None = None) -> dict[int, Explained]:
    """Feature index -> explanation, from a delphi run's explanations folder. `module`
    (e.g. "layers.6.mlp") picks one hookpoint's files; it is required when the folder
    holds several, since their feature indices overlap."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportedExplanationsError(f"{folder}: not a folder of delphi explanation files")
    by_module: dict[str, dict[int, Path]] = {}
    for file in sorted(folder.glob("*.txt")):
        found = _DELPHI_NAME.fullmatch(file.name)
        if found is None:
            raise ImportedExplanationsError(
                f"{file}: not named like delphi's explanation files (<module>_latent<N>.txt)"
            )
        by_module.setdefault(found["module"], {})[int(found["index"])] = file
    if not by_module:
        raise ImportedExplanationsError(
            f"{folder}: no delphi explanation files (<module>_latent<N>.txt) in this folder"
        )
    if module is None and len(by_module) > 1:
        raise ImportedExplanationsError(
            f"{folder}: explanations of several modules ({', '.join(sorted(by_module))}); "
            "pass module= to pick one"
        )
    name = module if module is not None else next(iter(by_module))
    if name not in by_module:
        raise ImportedExplanationsError(
            f"{folder}: no explanations of module {name!r}; found {', '.join(sorted(by_module))}"
        )
    return {
        index: Explained(feature=index, explainer="delphi", text=_delphi_text(file))
        for index, file in sorted(by_module[name].items())
    }


def _delphi_text(file: Path) -> str:
    value = _parse(_read_text(file), str(file))
    if not isinstance(value, str) or not value.strip():
        raise ImportedExplanationsError(
            f"{file}: expected the explanation as a non-empty JSON string (delphi writes "
            f"orjson.dumps(explanation)), found {value!r:.80}"
        )
    return value.strip()


# -- shared ---------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ImportedExplanationsError(f"{path}: cannot be read ({error})") from None


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportedExplanationsError(f"{where}: not valid JSON ({error})") from None


def _object(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ImportedExplanationsError(
            f"{where}: expected an explanation object, found a JSON {type(item).__name__}"
        )
    return item


def _natural(path: Path) -> list[Any]:
    """batch-2 before batch-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]

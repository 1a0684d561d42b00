"""Read text corpora from disk: folders of .txt, .jsonl, Parquet, or a saved HF dataset.

Every reader yields plain strings, verbatim (no normalisation, no filtering), so that
what the probes see is exactly what the user gave. Layouts accepted by `read_corpus`:

- a `.txt` file: ONE document per file (the whole file; no paragraph splitting, so a
  document keeps its layout and context);
- a `.jsonl` file: one JSON object per non-blank line, with a string field `text`;
- a `.parquet` file: a string column `text` (read in batches via pyarrow);
- a folder saved by `datasets` `save_to_disk` (has `state.json`, `dataset_info.json` or
  `dataset_dict.json`); a DatasetDict contributes its "train" split;
- a folder: searched recursively (sorted, hidden entries skipped) for all of the above;
  files with other suffixes are ignored (logged).

Helpers shared with the default corpus (`probes.default_corpus`, `probes.corpus_sources`):
`write_jsonl` (atomic), `normalize_text` (light, layout-keeping) and `count_tokens`
(batched, with a progress bar).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor

from errors import UserError

EXPLAIN_SPLIT, SCORE_SPLIT = 0, 1  # the evidence's two sides of a corpus, by text
log = logging.getLogger(__name__)

TEXT_FIELD = "text"
HF_DATASET_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
ACCEPTED_FORMATS = (
    "a .txt file (one document per file), a .jsonl file (a string field 'text' per "
    "line), a .parquet file (a string column 'text'), a folder saved by HF datasets' "
    "save_to_disk, or a folder containing any of these (searched recursively)"
)
_PARQUET_BATCH_ROWS = 4096
TOKEN_BATCH = 1024
_OVERSTRIKE = re.compile(r"[^\x08\n]\x08")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


class CorpusFormatError(UserError):
    """The corpus at a path is malformed or in a format we do not read."""


def read_corpus(path: str | Path) -> list[str]:
    """All texts under `path` as a list (see the module docstring for the layouts)."""
    return list(iter_corpus(path))


def iter_corpus(path: str | Path) -> Iterator[str]:
    """Yield the texts under `path` one by one, lazily, in a stable (sorted) order.

    Raises FileNotFoundError when `path` does not exist, and CorpusFormatError when it
    holds no readable text, is in an unknown format, or has a malformed record (the
    message names the file and line or row).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"corpus path {root} does not exist; expected {ACCEPTED_FORMATS}")
    n_texts = 0
    for source in _corpus_sources(root):
        for text in _read_source(source):
            n_texts += 1
            yield text
    if n_texts == 0:
        raise CorpusFormatError(f"no texts found in {root}; expected {ACCEPTED_FORMATS}")


def write_jsonl(path: Path, texts: Iterable[str]) -> int:
    """Write `texts` as `{"text": ...}` lines, atomically (temp file + rename).

    Atomic so that a reader never sees a half-written file, even when several worker
    processes build the same corpus at once. Returns the number of lines written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({TEXT_FIELD: text}, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def normalize_text(text: str) -> str:
    """Light normalisation that keeps a text's layout (newlines, indentation, tabs).

    Resolves teletype overstrikes (`_\\bx` -> `x`, common in old BSD fortunes), drops
    other control characters and trailing spaces, collapses runs of blank lines to
    one, and trims blank lines at both ends. Enough to make copies of one fortune
    across BSD releases compare equal, without touching doctest or verse layout.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    while "\x08" in text:
        stripped = _OVERSTRIKE.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = _CONTROL.sub("", text.replace("\x0c", "\n"))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _MANY_BLANK_LINES.sub("\n\n", text).strip("\n")


def count_tokens(
    tokenizer: Any, texts: Sequence[str], progress: bool = True, label: str = "tokens"
) -> int:
    """Total tokens of `texts` (no special tokens), tokenized in batches for speed.

    A Hugging Face fast tokenizer is counted through its Rust backend's
    `encode_batch_fast` (no offsets, no Python lists: about twice as fast); anything
    else is called like a Hugging Face tokenizer.
    """
    encode = _batch_token_counter(tokenizer)
    total = 0
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"counting tokens: {label}", total=len(texts))
        for i in range(0, len(texts), TOKEN_BATCH):
            batch = list(texts[i : i + TOKEN_BATCH])
            total += sum(encode(batch))
            bar.advance(task, len(batch))
    return total


def _batch_token_counter(tokenizer: Any) -> Callable[[list[str]], list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return lambda batch: [len(e) for e in backend.encode_batch_fast(batch, False)]
    return lambda batch: [
        len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]
    ]


def is_hf_dataset_dir(path: Path) -> bool:
    """True for a folder written by `datasets`' `save_to_disk` (Dataset or DatasetDict)."""
    return path.is_dir() and any((path / m).is_file() for m in HF_DATASET_MARKERS)


def _corpus_sources(root: Path) -> list[Path]:
    """The files and HF dataset folders to read under `root`, in sorted order."""
    if root.is_file() or is_hf_dataset_dir(root):
        if root.is_file() and _reader_for(root) is None:
            raise CorpusFormatError(
                f"cannot read {root}: unknown file type {root.suffix!r}; "
                f"expected {ACCEPTED_FORMATS}"
            )
        return [root]
    sources: list[Path] = []
    ignored: Counter[str] = Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames.sort()
        kept_dirs = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if is_hf_dataset_dir(here / d):
                sources.append(here / d)  # read whole; do not descend into its arrow files
            else:
                kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            file = here / name
            if name.startswith("."):
                continue
            if _reader_for(file) is None:
                ignored[file.suffix or name] += 1
            else:
                sources.append(file)
    if ignored:
        log.info("corpus %s: ignored files of unknown type: %s", root, dict(ignored))
    if not sources:
        raise CorpusFormatError(
            f"no readable corpus files in folder {root}; expected {ACCEPTED_FORMATS}"
        )
    return sorted(sources)


def _reader_for(file: Path) -> str | None:
    suffix = file.suffix.lower()
    return {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}.get(suffix)


def _read_source(source: Path) -> Iterator[str]:
    if source.is_dir():
        yield from _read_hf_dataset(source)
        return
    kind = _reader_for(source)
    if kind == "txt":
        yield _read_txt(source)
    elif kind == "jsonl":
        yield from _read_jsonl(source)
    elif kind == "parquet":
        yield from _read_parquet(source)


def _read_txt(file: Path) -> str:
    """One .txt file is one document."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusFormatError(f"{file}: not valid UTF-8 ({e.reason} at byte {e.start})") from e


def _read_jsonl(file: Path) -> Iterator[str]:
    """Each non-blank line must be a JSON object with a string `text` field."""
    with file.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            yield _text_from_json_line(file, lineno, line)


def _text_from_json_line(file: Path, lineno: int, line: str) -> str:
    where = f"{file}, line {lineno}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise CorpusFormatError(f"{where}: invalid JSON ({e.msg})") from e
    if not isinstance(record, dict) or TEXT_FIELD not in record:
        raise CorpusFormatError(f"{where}: expected a JSON object with a {TEXT_FIELD!r} field")
    text = record[TEXT_FIELD]
    if not isinstance(text, str):
        raise CorpusFormatError(
            f"{where}: field {TEXT_FIELD!r} must be a string, got {type(text).__name__}"
        )
    return text


def _read_parquet(file: Path) -> Iterator[str]:
    """The `text` column, in row batches so a large file never sits in memory whole."""
    import pyarrow.lib
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
    except pyarrow.lib.ArrowException as e:
        raise CorpusFormatError(f"{file}: not a readable Parquet file ({e})") from e
    columns = pf.schema_arrow.names
    if TEXT_FIELD not in columns:
        raise CorpusFormatError(f"{file}: no {TEXT_FIELD!r} column (columns: {columns})")
    row = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[TEXT_FIELD]):
        yield from _checked_texts(batch.column(0).to_pylist(), f"{file}", row)
        row += batch.num_rows


def _read_hf_dataset(folder: Path) -> Iterator[str]:
    """A `save_to_disk` folder; for a DatasetDict, its "train" split."""
    import datasets

    ds: Any = datasets.load_from_disk(str(folder))
    where = str(folder)
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise CorpusFormatError(
                f"{folder}: dataset has no 'train' split (splits: {sorted(ds)}); "
                "save the split you want on its own"
            )
        ds, where = ds["train"], f"{folder} (split 'train')"
    if TEXT_FIELD not in ds.column_names:
        raise CorpusFormatError(f"{where}: no {TEXT_FIELD!r} column (columns: {ds.column_names})")
    row = 0
    for batch in ds.select_columns([TEXT_FIELD]).iter(batch_size=_PARQUET_BATCH_ROWS):
        values = batch[TEXT_FIELD]
        yield from _checked_texts(values, where, row)
        row += len(values)


def _checked_texts(values: list[Any], where: str, first_row: int) -> Iterator[str]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise CorpusFormatError(
                f"{where}, row {first_row + i}: {TEXT_FIELD!r} must be a string, "
                f"got {type(value).__name__}"
            )
        yield value


def corpus_hash(texts: Sequence[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def text_splits(texts: Sequence[str], score_fraction: float, seed: int) -> Tensor:
    """Per text, SCORE_SPLIT when a seeded hash of its text falls below score_fraction,
    else EXPLAIN_SPLIT."""
    if score_fraction >= 1.0:  # all held out (the hash rounds to 1.0 once in 2**53)
        return torch.full((len(texts),), SCORE_SPLIT, dtype=torch.uint8)
    out = torch.empty(len(texts), dtype=torch.uint8)
    for i, text in enumerate(texts):
        digest = hashlib.blake2b(f"{seed}:{text}".encode("utf-8", "surrogatepass"), digest_size=8)
        out[i] = (
            SCORE_SPLIT
            if int.from_bytes(digest.digest(), "little") / 2**64 < score_fraction
            else EXPLAIN_SPLIT
        )
    return out

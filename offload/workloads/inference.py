"""Language identification with py3langid: a naive Bayes model over byte n-grams, 97 languages.

The weights (``py3langid/data/model.npz.xz``, 4.5 MB) ship inside the wheel: nothing is
downloaded at run time. Loading takes most of a second; classifying a paragraph takes about
a millisecond. So the worker calls :func:`load_model` once per process before it forks (via
``tasks.preload``), and every work horse inherits the loaded model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier


@dataclass
class LoadedModel:
    identifier: LanguageIdentifier
    load_seconds: float


_model: LoadedModel | None = None


def load_model() -> LoadedModel:
    """Return the model, loading it into this process the first time."""
    global _model
    if _model is None:
        started = time.perf_counter()
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        _model = LoadedModel(identifier=identifier, load_seconds=time.perf_counter() - started)
    return _model


def is_loaded() -> bool:
    """Return True if this process already holds the model."""
    return _model is not None


def identify_language(text: str, top: int = 3) -> dict[str, Any]:
    """Return the most likely languages of ``text`` with their probabilities, and the timings."""
    was_loaded = is_loaded()
    model = load_model()
    started = time.perf_counter()
    ranked = model.identifier.rank(text)[:top]
    inference_ms = (time.perf_counter() - started) * 1000
    return {
        "language": ranked[0][0],
        "probability": round(ranked[0][1], 4),
        "candidates": [{"language": code, "probability": round(p, 4)} for code, p in ranked],
        "inference_ms": round(inference_ms, 3),
        "model_preloaded": was_loaded,
        # Paid by this job only when the worker did not preload the model.
        "model_load_ms": 0.0 if was_loaded else round(model.load_seconds * 1000, 1),
    }

"""F1: the harmonic mean of precision and recall (scikit-learn's f1_score)."""

from __future__ import annotations

from sklearn.metrics import f1_score

from gpuq.worker.metrics import classification


class F1(classification.SklearnScore):
    """F1: the harmonic mean of precision and recall."""

    key = "f1"
    summary = "F1: the harmonic mean of precision and recall"
    score = staticmethod(f1_score)

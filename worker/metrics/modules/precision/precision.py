"""Precision: true positives over all predicted positives (scikit-learn's precision_score)."""

from __future__ import annotations

from sklearn.metrics import precision_score

from gpuq.worker.metrics import classification


class Precision(classification.SklearnScore):
    """Precision: true positives over all predicted positives."""

    key = "precision"
    summary = "Precision: true positives over all predicted positives"
    score = staticmethod(precision_score)

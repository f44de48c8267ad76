"""Recall: true positives over all actual positives (scikit-learn's recall_score)."""

from __future__ import annotations

from sklearn.metrics import recall_score

from gpuq.worker.metrics import classification


class Recall(classification.SklearnScore):
    """Recall: true positives over all actual positives."""

    key = "recall"
    summary = "Recall: true positives over all actual positives"
    score = staticmethod(recall_score)

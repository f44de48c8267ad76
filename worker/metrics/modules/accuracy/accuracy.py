"""Accuracy: the share of predicted labels that equal their reference label (scikit-learn's accuracy_score)."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """
Accuracy is the number of correct predictions divided by the number of predictions, in [0, 1].
With normalize=False it is the count of correct predictions instead.
"""

_INPUTS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    normalize (bool): return the fraction (True, default) or the count (False) of correct predictions.
    sample_weight (list of float): optional per-example weights.
Returns:
    accuracy (float)
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class Accuracy(evaluate.Metric):  # type: ignore[misc]  # evaluate ships no type hints
    """Fraction (or count) of exact label matches."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"
            ],
        )

    def _compute(
        self,
        predictions: Sequence[int],
        references: Sequence[int],
        normalize: bool = True,
        sample_weight: Sequence[float] | None = None,
    ) -> dict[str, float]:
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}

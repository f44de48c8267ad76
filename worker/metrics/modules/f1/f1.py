"""F1: the harmonic mean of precision and recall (scikit-learn's f1_score)."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = """
F1: the harmonic mean of precision and recall, in [0, 1]. For more than two classes pick an averaging:
"macro" (unweighted mean over classes), "micro" (from global counts), "weighted" (mean weighted by support),
or None for one score per class.
"""

_INPUTS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    labels (list of int): labels to include, and their order when average=None.
    pos_label (int): the positive class when average="binary" (default 1).
    average (str or None): "binary" (default), "micro", "macro", "weighted" or None.
    sample_weight (list of float): optional per-example weights.
    zero_division ("warn", 0, 1 or nan): value used when a class has no predicted or true samples.
Returns:
    f1 (float, or list of float when average=None)
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


class F1(evaluate.Metric):  # type: ignore[misc]  # evaluate ships no type hints
    """F1: the harmonic mean of precision and recall."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"
            ],
        )

    def _compute(
        self,
        predictions: Sequence[int],
        references: Sequence[int],
        labels: Sequence[int] | None = None,
        pos_label: int = 1,
        average: str | None = "binary",
        sample_weight: Sequence[float] | None = None,
        zero_division: str | float = "warn",
    ) -> dict[str, float | list[float]]:
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {"f1": float(score) if np.ndim(score) == 0 else score.tolist()}

"""What the shipped classification scores (precision, recall, f1 under ``modules/``) share: one scikit-learn
score over integer labels, with its averaging options, description, inputs and citation.

Each metric script stays the file evaluate loads by path (``modules/<name>/<name>.py``); it subclasses
``SklearnScore`` naming its score function, result key and one-line summary. The scripts import this module
by its package name, which evaluate resolves like any installed library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import datasets
import evaluate
import numpy as np

_AVERAGING = """For more than two classes pick an averaging:
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
    {key} (float, or list of float when average=None)
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


class SklearnScore(evaluate.Metric):  # type: ignore[misc]  # evaluate ships no type hints
    """A scikit-learn classification score (``score``) reported under ``key``."""

    key: ClassVar[str]
    summary: ClassVar[str]  # one sentence: what the score is
    score: ClassVar[Callable[..., Any]]

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=f"\n{self.summary}, in [0, 1]. {_AVERAGING}",
            citation=_CITATION,
            inputs_description=_INPUTS.format(key=self.key),
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=[
                f"https://scikit-learn.org/stable/modules/generated/sklearn.metrics.{self.key}_score.html"
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
        value = type(self).score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {self.key: float(value) if np.ndim(value) == 0 else value.tolist()}

"""Evaluation metrics shipped inside gpuq and loaded from local scripts, so workers never fetch them from the Hub."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import evaluate

MODULES_DIR = Path(__file__).resolve().parent / "modules"
METRIC_NAMES = frozenset({"accuracy", "f1", "precision", "recall", "bleu", "sacrebleu", "rouge"})
_AVERAGED = frozenset({"f1", "precision", "recall"})
_INPUTS = frozenset({"predictions", "references"})

__all__ = ["METRIC_NAMES", "compute_metrics", "load_metric", "metric_path"]


def metric_path(name: str) -> Path:
    """Return the script of the shipped metric `name`; ValueError for a name gpuq does not ship."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; gpuq ships: {', '.join(sorted(METRIC_NAMES))}")
    return MODULES_DIR / name / f"{name}.py"


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load the shipped metric `name` through evaluate's local-script loader (a file path never hits the network)."""
    # keep_in_memory: inputs go to an in-memory Arrow table instead of temp files under HF_METRICS_CACHE.
    return evaluate.load(str(metric_path(name)), keep_in_memory=True)


def compute_metrics(
    names: list[str], predictions: Sequence[Any], references: Sequence[Any], **kwargs: Any
) -> dict[str, float]:
    """Compute every named metric on the same inputs and merge their scores into one flat dict.

    Each metric gets only the keyword arguments its `_compute` accepts; a keyword no named metric accepts is an
    error. f1/precision/recall default to average="binary" for {0, 1} labels and "macro" otherwise.
    """
    metrics = {name: load_metric(name) for name in dict.fromkeys(names)}
    accepted = {name: _compute_kwargs(metric) for name, metric in metrics.items()}
    unused = set(kwargs).difference(*accepted.values())
    if unused:
        raise ValueError(f"no metric in {list(metrics)} accepts keyword(s) {sorted(unused)}")
    if kwargs.get("average", "") is None:
        raise ValueError("average=None gives per-class scores; call load_metric(name).compute for those")
    results: dict[str, float] = {}
    for name, metric in metrics.items():
        metric_kwargs = {key: value for key, value in kwargs.items() if key in accepted[name]}
        if name in _AVERAGED:
            metric_kwargs.setdefault("average", _default_average(predictions, references))
        scores = metric.compute(predictions=predictions, references=references, **metric_kwargs) or {}
        results.update({key: float(value) for key, value in scores.items()})
    return results


def _compute_kwargs(metric: evaluate.EvaluationModule) -> set[str]:
    """Names of the options a metric's `_compute` takes besides its inputs."""
    # _compute is the extension point every evaluate module implements; its signature is the metric's options.
    return set(inspect.signature(metric._compute).parameters) - _INPUTS


def _default_average(predictions: Sequence[Any], references: Sequence[Any]) -> str:
    """'binary' when every label is 0 or 1, else 'macro' (sklearn's 'binary' refuses more than two classes)."""
    return "binary" if set(predictions) | set(references) <= {0, 1} else "macro"

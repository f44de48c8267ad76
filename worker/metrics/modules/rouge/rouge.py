"""ROUGE-1/2/L/Lsum F-measure averaged over examples (Google's rouge_score)."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """
ROUGE compares a generated text with reference text by overlapping units: rouge1 and rouge2 count shared
unigrams and bigrams, rougeL uses the longest common subsequence, and rougeLsum the union of sentence-level
longest common subsequences (sentences are separated by newlines, so put each sentence on its own line).
This module reports, for each ROUGE type, the mean F-measure over all examples.
"""

_INPUTS = """
Args:
    predictions (list of str): one generated text per example.
    references (list of str, or list of list of str): the reference(s) of each example; with several, the
        best-scoring reference counts.
    rouge_types (list of str): subset of ["rouge1", "rouge2", "rougeL", "rougeLsum"] (default: all four).
    use_stemmer (bool): apply the Porter stemmer before matching (default False).
Returns:
    one float per ROUGE type, e.g. {"rouge1": ..., "rouge2": ..., "rougeL": ..., "rougeLsum": ...}
"""

_CITATION = """
@inproceedings{lin-2004-rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  pages={74--81},
  year={2004}
}
"""

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class Rouge(evaluate.Metric):  # type: ignore[misc]  # evaluate ships no type hints
    """Mean ROUGE F-measures computed by rouge_score."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str | Sequence[str]],
        rouge_types: Sequence[str] | None = None,
        use_stemmer: bool = False,
    ) -> dict[str, float]:
        types = list(rouge_types or ROUGE_TYPES)
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
        scores = [
            scorer.score(refs, pred) if isinstance(refs, str) else scorer.score_multi(refs, pred)
            for pred, refs in zip(predictions, references)
        ]
        if not scores:
            raise ValueError("rouge needs at least one prediction")
        return {kind: sum(score[kind].fmeasure for score in scores) / len(scores) for kind in types}

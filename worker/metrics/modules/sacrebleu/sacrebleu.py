"""SacreBLEU: corpus BLEU on sacrebleu's 0-100 scale, with sacrebleu's tokenization and smoothing options."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = """
SacreBLEU computes corpus BLEU from detokenized text with a fixed, reported tokenization, so that scores are
comparable across papers and systems. The score is on sacrebleu's 0-100 scale.
"""

_INPUTS = """
Args:
    predictions (list of str): one translation per example.
    references (list of list of str, or list of str): the reference(s) of each example; every example needs
        the same number of references.
    tokenize (str): sacrebleu tokenizer; None picks sacrebleu's default ("13a").
    lowercase (bool): compare case-insensitively.
    smooth_method (str): "exp" (default), "floor", "add-k" or "none".
    smooth_value (float): the value for "floor" / "add-k" smoothing.
    force (bool): score text that looks already tokenized without warning.
    use_effective_order (bool): drop n-gram orders with no matches (for sentence-level scores).
Returns:
    sacrebleu (float, 0-100)
"""

_CITATION = """
@inproceedings{post-2018-call,
  title={A Call for Clarity in Reporting {BLEU} Scores},
  author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation: Research Papers},
  pages={186--191},
  year={2018}
}
"""


def _reference_streams(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Turn per-example references into sacrebleu's per-position streams (one list per reference slot)."""
    per_example = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    if len({len(refs) for refs in per_example}) > 1:
        raise ValueError("every prediction needs the same number of references")
    return [list(stream) for stream in zip(*per_example)]


class SacreBleu(evaluate.Metric):  # type: ignore[misc]  # evaluate ships no type hints
    """Corpus BLEU (0-100) computed by sacrebleu."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/W18-6319"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str | Sequence[str]],
        tokenize: str | None = None,
        lowercase: bool = False,
        smooth_method: str = "exp",
        smooth_value: float | None = None,
        force: bool = False,
        use_effective_order: bool = False,
    ) -> dict[str, float]:
        options = {"tokenize": tokenize} if tokenize is not None else {}
        result = sacrebleu.corpus_bleu(
            predictions,
            _reference_streams(references),
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            force=force,
            lowercase=lowercase,
            use_effective_order=use_effective_order,
            **options,
        )
        return {"sacrebleu": float(result.score)}

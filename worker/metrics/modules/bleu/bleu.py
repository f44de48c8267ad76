"""BLEU on a 0-1 scale with sacrebleu's standard settings; one or several references per prediction."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = """
BLEU scores a corpus of machine translations by the modified n-gram precision (n = 1..4) of each translation
against its references, times a brevity penalty for translations shorter than the references. This module runs
sacrebleu's corpus_bleu (13a tokenizer, exponential smoothing by default) and reports the score on a 0-1 scale.
Use "sacrebleu" for sacrebleu's own 0-100 scale and its full set of options.
"""

_INPUTS = """
Args:
    predictions (list of str): one translation per example.
    references (list of list of str, or list of str): the reference(s) of each example; every example needs
        the same number of references.
    tokenize (str): sacrebleu tokenizer, "13a" by default ("none", "intl", "zh", "ja-mecab", "char", ...).
    smooth_method (str): "exp" (default), "floor", "add-k" or "none".
    lowercase (bool): compare case-insensitively.
Returns:
    bleu (float, 0-1), brevity_penalty (float), length_ratio (float, prediction length / reference length)
"""

_CITATION = """
@inproceedings{papineni2002bleu,
  title={{BLEU}: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics},
  pages={311--318},
  year={2002}
}
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


class Bleu(evaluate.Metric):  # type: ignore[misc]  # evaluate ships no type hints
    """Corpus BLEU (0-1) computed by sacrebleu."""

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
            reference_urls=["https://aclanthology.org/P02-1040", "https://aclanthology.org/W18-6319"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str | Sequence[str]],
        tokenize: str = "13a",
        smooth_method: str = "exp",
        lowercase: bool = False,
    ) -> dict[str, float]:
        result = sacrebleu.corpus_bleu(
            predictions,
            _reference_streams(references),
            tokenize=tokenize,
            smooth_method=smooth_method,
            lowercase=lowercase,
        )
        ratio = result.sys_len / result.ref_len if result.ref_len else 0.0
        return {"bleu": result.score / 100.0, "brevity_penalty": float(result.bp), "length_ratio": ratio}

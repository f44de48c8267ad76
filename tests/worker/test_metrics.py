"""The shipped metric scripts load offline by path and agree with the libraries they wrap."""

from __future__ import annotations

import importlib
import random
import socket
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

TOL = 1e-9
VOCAB = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "log",
    "quickly",
    "slowly",
    "big",
    "small",
    "red",
]
SKLEARN = {"f1": f1_score, "precision": precision_score, "recall": recall_score}


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """worker.metrics imported with the HF offline flags and caches set first, and any TCP/UDP connect refused."""
    cache = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:
        # evaluate/huggingface_hub read these once, at import, so they are set before the first import.
        for flag in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE"):
            mp.setenv(flag, "1")
        mp.setenv("HF_MODULES_CACHE", str(cache / "modules"))
        mp.setenv("HF_METRICS_CACHE", str(cache / "metrics"))
        mp.setattr(socket.socket, "connect", _refuse_network(socket.socket.connect))
        yield importlib.import_module("gpuq.worker.metrics")


def _refuse_network(connect: Any) -> Any:
    """Wrap socket.connect so an internet-family connection fails the test instead of reaching out."""

    def guarded(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"metric loading tried to connect to {address}")
        return connect(sock, address)

    return guarded


def _labels(seed: int, n: int, classes: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    return [rng.randrange(classes) for _ in range(n)], [rng.randrange(classes) for _ in range(n)]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(4, 12)))


def _texts(seed: int, n: int, refs_per_example: int) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    predictions = [_sentence(rng) for _ in range(n)]
    references = [[_sentence(rng) for _ in range(refs_per_example)] for _ in range(n)]
    return predictions, references


def _streams(references: list[list[str]]) -> list[list[str]]:
    return [list(stream) for stream in zip(*references)]


def test_accuracy_matches_sklearn(metrics: ModuleType) -> None:
    predictions, references = _labels(seed=1, n=200, classes=4)
    result = metrics.load_metric("accuracy").compute(predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions), abs=TOL)


@pytest.mark.parametrize("name", ["f1", "precision", "recall"])
def test_binary_score_matches_sklearn(metrics: ModuleType, name: str) -> None:
    predictions, references = _labels(seed=2, n=200, classes=2)
    result = metrics.load_metric(name).compute(predictions=predictions, references=references)
    assert result[name] == pytest.approx(SKLEARN[name](references, predictions), abs=TOL)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("name", ["f1", "precision", "recall"])
def test_multiclass_score_matches_sklearn(metrics: ModuleType, name: str, average: str) -> None:
    predictions, references = _labels(seed=3, n=300, classes=5)
    result = metrics.load_metric(name).compute(
        predictions=predictions, references=references, average=average
    )
    expected = SKLEARN[name](references, predictions, average=average)
    assert result[name] == pytest.approx(expected, abs=TOL)


def test_per_class_f1_is_a_list_matching_sklearn(metrics: ModuleType) -> None:
    predictions, references = _labels(seed=4, n=300, classes=3)
    result = metrics.load_metric("f1").compute(predictions=predictions, references=references, average=None)
    assert result["f1"] == pytest.approx(list(f1_score(references, predictions, average=None)), abs=TOL)


@pytest.mark.parametrize("refs_per_example", [1, 3])
def test_bleu_with_reference_lists_matches_sacrebleu_on_a_0_to_1_scale(
    metrics: ModuleType, refs_per_example: int
) -> None:
    predictions, references = _texts(seed=5, n=60, refs_per_example=refs_per_example)
    result = metrics.load_metric("bleu").compute(predictions=predictions, references=references)
    expected = sacrebleu.corpus_bleu(predictions, _streams(references))
    assert result["bleu"] == pytest.approx(expected.score / 100, abs=TOL)
    assert result["brevity_penalty"] == pytest.approx(expected.bp, abs=TOL)
    assert result["length_ratio"] == pytest.approx(expected.sys_len / expected.ref_len, abs=TOL)


def test_bleu_accepts_one_plain_string_reference_per_prediction(metrics: ModuleType) -> None:
    predictions, references = _texts(seed=6, n=40, refs_per_example=1)
    flat = [refs[0] for refs in references]
    result = metrics.load_metric("bleu").compute(predictions=predictions, references=flat)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [flat]).score / 100, abs=TOL)


def test_sacrebleu_matches_sacrebleu_with_its_options(metrics: ModuleType) -> None:
    predictions, references = _texts(seed=7, n=60, refs_per_example=2)
    options = {"tokenize": "intl", "lowercase": True, "smooth_method": "floor", "smooth_value": 0.1}
    result = metrics.load_metric("sacrebleu").compute(
        predictions=predictions, references=references, **options
    )
    expected = sacrebleu.corpus_bleu(predictions, _streams(references), **options)
    assert result["sacrebleu"] == pytest.approx(expected.score, abs=TOL)


def test_uneven_reference_counts_are_rejected(metrics: ModuleType) -> None:
    with pytest.raises(ValueError, match="same number of references"):
        metrics.load_metric("sacrebleu").compute(
            predictions=["a b", "c d"], references=[["a b"], ["c d", "c"]]
        )


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_is_the_mean_f_measure_of_rouge_score(metrics: ModuleType, use_stemmer: bool) -> None:
    predictions, references = _texts(seed=8, n=50, refs_per_example=1)
    flat = [refs[0] for refs in references]
    result = metrics.load_metric("rouge").compute(
        predictions=predictions, references=flat, use_stemmer=use_stemmer
    )
    kinds = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=use_stemmer)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, flat)]
    assert set(result) == set(kinds)
    for kind in kinds:
        assert result[kind] == pytest.approx(sum(s[kind].fmeasure for s in scores) / len(scores), abs=TOL)


def test_rouge_with_several_references_keeps_the_best_one(metrics: ModuleType) -> None:
    predictions, references = _texts(seed=9, n=30, refs_per_example=3)
    result = metrics.load_metric("rouge").compute(
        predictions=predictions, references=references, rouge_types=["rouge1"]
    )
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    scores = [
        scorer.score_multi(refs, pred)["rouge1"].fmeasure for pred, refs in zip(predictions, references)
    ]
    assert result == {"rouge1": pytest.approx(sum(scores) / len(scores), abs=TOL)}


def test_unknown_metric_name_is_a_value_error_naming_it(metrics: ModuleType) -> None:
    with pytest.raises(ValueError, match="'meteor'"):
        metrics.load_metric("meteor")


def test_every_shipped_name_resolves_to_a_script(metrics: ModuleType) -> None:
    for name in metrics.METRIC_NAMES:
        assert metrics.metric_path(name).is_file()


def test_compute_metrics_defaults_to_binary_average_for_0_1_labels(metrics: ModuleType) -> None:
    predictions, references = _labels(seed=10, n=200, classes=2)
    result = metrics.compute_metrics(["accuracy", "f1", "precision", "recall"], predictions, references)
    assert result == pytest.approx(
        {
            "accuracy": accuracy_score(references, predictions),
            "f1": f1_score(references, predictions, average="binary"),
            "precision": precision_score(references, predictions, average="binary"),
            "recall": recall_score(references, predictions, average="binary"),
        },
        abs=TOL,
    )


def test_compute_metrics_defaults_to_macro_average_for_more_classes(metrics: ModuleType) -> None:
    predictions, references = _labels(seed=11, n=300, classes=4)
    result = metrics.compute_metrics(["f1", "recall"], predictions, references)
    assert result == pytest.approx(
        {
            "f1": f1_score(references, predictions, average="macro"),
            "recall": recall_score(references, predictions, average="macro"),
        },
        abs=TOL,
    )


def test_compute_metrics_passes_an_explicit_average_through(metrics: ModuleType) -> None:
    predictions, references = _labels(seed=12, n=300, classes=4)
    result = metrics.compute_metrics(["f1"], predictions, references, average="weighted")
    assert result["f1"] == pytest.approx(f1_score(references, predictions, average="weighted"), abs=TOL)


def test_compute_metrics_merges_text_metrics_and_routes_each_option(metrics: ModuleType) -> None:
    predictions, references = _texts(seed=13, n=40, refs_per_example=1)
    result = metrics.compute_metrics(
        ["bleu", "sacrebleu", "rouge"], predictions, references, use_stemmer=True, tokenize="char"
    )
    expected = sacrebleu.corpus_bleu(predictions, _streams(references), tokenize="char")
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    rouge1 = [
        scorer.score_multi(refs, pred)["rouge1"].fmeasure for pred, refs in zip(predictions, references)
    ]
    assert set(result) == {
        "bleu",
        "brevity_penalty",
        "length_ratio",
        "sacrebleu",
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
    }
    assert result["bleu"] == pytest.approx(expected.score / 100, abs=TOL)
    assert result["sacrebleu"] == pytest.approx(expected.score, abs=TOL)
    assert result["rouge1"] == pytest.approx(sum(rouge1) / len(rouge1), abs=TOL)


def test_compute_metrics_rejects_an_option_no_metric_takes(metrics: ModuleType) -> None:
    with pytest.raises(ValueError, match="use_stemmer"):
        metrics.compute_metrics(["accuracy"], [0, 1], [0, 1], use_stemmer=True)


def test_compute_metrics_rejects_an_unknown_name_before_computing(metrics: ModuleType) -> None:
    with pytest.raises(ValueError, match="'bertscore'"):
        metrics.compute_metrics(["accuracy", "bertscore"], [0, 1], [0, 1])

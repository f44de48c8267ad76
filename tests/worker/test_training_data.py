"""Declarative data preparation for training jobs: column mapping, length filter, shuffle, split, tokenisation."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from gpuq.common.errors import JobError
from gpuq.common.jobs.datasource import DataSource
from gpuq.worker.training import data, loop


def _source(**fields: Any) -> DataSource:
    """A job's data source as the worker reads it (an upload; the rows come from the test)."""
    return DataSource(file_id="f" * 32, **fields)


def _splits(rows: list[dict[str, Any]]) -> data.Splits:
    return data.Splits(Dataset.from_list(rows), None)


def test_columns_are_mapped_filtered_by_length_shuffled_and_split() -> None:
    rows = [{"review": "x" * n, "stars": n % 2, "extra": n} for n in range(1, 101)]
    spec = _source(columns={"text": "review", "label": "stars"}, min_length=11, max_length=90, seed=7,
                   test_size=0.2)
    out = data.prepare(_splits(rows), spec, [["text", "label"]])
    assert out.eval is not None
    assert (len(out.train), len(out.eval)) == (64, 16)  # 80 rows of 11..90 characters, 20% held out
    assert out.train.column_names == ["text", "label"]
    lengths = [len(t) for t in out.train["text"]] + [len(t) for t in out.eval["text"]]
    assert sorted(lengths) == list(range(11, 91))
    assert lengths[:64] != sorted(lengths[:64])  # shuffled
    again = data.prepare(_splits(rows), spec, [["text", "label"]])
    assert again.train["text"] == out.train["text"]  # same seed, same order


def test_first_alternative_present_wins_and_missing_columns_are_named() -> None:
    rows = [{"prompt": "p", "completion": "c", "text": "t"}] * 4
    out = data.prepare(_splits(rows), _source(test_size=0), [["prompt", "completion"], ["text"]])
    assert out.train.column_names == ["prompt", "completion"] and out.eval is None
    with pytest.raises(JobError, match="'body'"):
        data.prepare(_splits(rows), _source(columns={"text": "body"}), [["text"]])


def test_rows_with_missing_values_and_row_caps() -> None:
    rows = [{"text": None if i % 3 == 0 else f"row {i}"} for i in range(30)]
    out = data.prepare(_splits(rows), _source(max_rows=5, test_size=0), [["text"]])
    assert len(out.train) == 5 and None not in out.train["text"]


def test_label_names_come_from_params_base_model_or_data() -> None:
    ints = _splits([{"label": i % 2} for i in range(6)])
    assert data.label_names(ints, None, {0: "NEG", 1: "POS"}) == ["NEG", "POS"]
    strings = _splits([{"label": s} for s in ("b", "a", "c")])
    assert data.label_names(strings, None, {0: "x"}) == ["a", "b", "c"]
    assert data.label_names(strings, ["c", "b", "a"], {}) == ["c", "b", "a"]
    with pytest.raises(JobError):
        data.label_names(strings, ["a", "b"], {})


def test_prompt_tokens_are_masked_from_the_loss(tmp_path: Path) -> None:
    from gpuq.worker.devmodels import build_tiny_gpt2
    from gpuq.worker.training.model import load_tokenizer

    tok = load_tokenizer(build_tiny_gpt2(tmp_path / "gpt2"))
    ds = Dataset.from_list([{"prompt": "the answer is", "completion": " blue"}])
    row = data.tokenize_causal(ds, tok, max_length=64)[0]
    prompt_len = len(tok("the answer is", add_special_tokens=False)["input_ids"])
    assert row["labels"][:prompt_len] == [data.IGNORE_INDEX] * prompt_len
    assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]
    assert row["input_ids"][-1] == tok.eos_token_id
    batch = data.collate(tok.pad_token_id)([row, {**row, "input_ids": row["input_ids"][:2],
                                                  "attention_mask": [1, 1], "labels": row["labels"][:2]}])
    assert batch["labels"][1, 2:].tolist() == [data.IGNORE_INDEX] * (len(row["input_ids"]) - 2)


@pytest.mark.parametrize(("batches", "accumulation", "epochs", "max_steps", "expected"), [
    (10, 1, 3, None, (30, 3)), (10, 4, 2, None, (6, 2)), (10, 1, 1, 25, (25, 3)),
])
def test_total_steps_follow_epochs_unless_max_steps(batches: int, accumulation: int, epochs: int,
                                                    max_steps: int | None, expected: tuple[int, int]) -> None:
    assert loop.steps_for(batches, accumulation, epochs, max_steps) == expected

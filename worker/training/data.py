"""Rows for training and evaluation: load (upload or Hub dataset), map columns, filter, shuffle, split, tokenise."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuq.common.errors import JobError
from gpuq.common.files import get_file_store
from gpuq.common.jobs.datasource import DataSource, SealedHubToken, pick_columns
from gpuq.worker import hub
from gpuq.worker.context import JobContext
from gpuq.worker.sources import hub_dataset

log = logging.getLogger(__name__)
IGNORE_INDEX = -100  # label value the loss skips (prompt tokens, padding)
_BUILDERS = {"csv": "csv", "jsonl": "json", "parquet": "parquet"}


@dataclass
class Splits:
    """Prepared rows: a train split and, when there is one, an eval split."""

    train: Any
    eval: Any | None


def _load_file(path: Path) -> Any:
    from datasets import load_dataset

    builder = _BUILDERS[path.suffix.lstrip(".")]
    return load_dataset(builder, data_files=str(path), split="train")


def _split(dsd: Any, name: str, what: str) -> Any:
    if name not in dsd:
        raise JobError(f"{what} has no split {name!r} (has {sorted(dsd)})")
    return dsd[name]


def load_rows(ctx: JobContext, data: DataSource) -> Splits:
    """The raw rows of ``data``: an upload of this tenant, or a Hub dataset pulled at a pinned commit (with
    the job's sealed Hub token, if it gave one)."""
    if data.file_id:
        files = get_file_store(ctx.settings.files_root)
        evals = data.eval_file_id
        return Splits(_load_file(files.path(ctx.tenant, data.file_id)),
                      _load_file(files.path(ctx.tenant, evals)) if evals else None)
    from datasets import load_dataset

    assert data.dataset is not None  # DataSource holds exactly one of file_id or dataset
    pinned = ctx.resolved.get("dataset", {}).get("sha")  # a resumed job reads exactly the same commit
    sealed = ctx.params_as(SealedHubToken).sealed_hub_token
    pulled = hub_dataset(data.dataset, pinned or data.revision, hub.pull_token(sealed), "params.data.dataset")
    ctx.pin("dataset", **{**pulled.pin(), "revision": data.revision or "main"})
    dsd = load_dataset(str(pulled.path), name=data.config)
    what = f"dataset {data.dataset}"
    evals = data.eval_split
    return Splits(_split(dsd, data.split, what), _split(dsd, evals, what) if evals else None)


CHAT_COLUMNS = ["messages"]
PREFERENCE_COLUMNS = ["input", "preferred_output", "non_preferred_output"]


def from_conversations(rows: Splits, tokenizer: Any) -> Splits:
    """OpenAI's fine-tuning rows as gpuq's columns, through the base model's chat template: a chat row
    (``messages``) becomes ``prompt`` (the conversation before its last turn, the assistant's turn open) and
    ``completion`` (that last assistant turn); a preference row (``input.messages``, ``preferred_output``,
    ``non_preferred_output``) becomes ``prompt``, ``chosen`` and ``rejected``. Other rows pass unchanged."""
    return Splits(*(None if s is None else _conversations(s, tokenizer) for s in (rows.train, rows.eval)))


def _conversations(ds: Any, tokenizer: Any) -> Any:
    columns = set(ds.column_names)
    if "messages" in columns and not columns & {"prompt", "text"}:
        return ds.map(lambda row: _chat_row(row["messages"], tokenizer), remove_columns=ds.column_names)
    if set(PREFERENCE_COLUMNS) <= columns and "prompt" not in columns:
        return ds.map(lambda row: _preference_row(row, tokenizer), remove_columns=ds.column_names)
    return ds


def _chat_row(messages: list[dict[str, Any]], tokenizer: Any) -> dict[str, str]:
    if not messages or messages[-1].get("role") != "assistant":
        raise JobError("a chat training row must end with an assistant message")
    return {"prompt": _rendered(messages[:-1], tokenizer), "completion": str(messages[-1].get("content") or "")}


def _preference_row(row: dict[str, Any], tokenizer: Any) -> dict[str, str]:
    def answer(turns: Any) -> str:
        if not turns or not isinstance(turns, list):
            raise JobError("preferred_output and non_preferred_output must each hold one assistant message")
        return str(turns[-1].get("content") or "")
    messages = (row["input"] or {}).get("messages") or []
    return {"prompt": _rendered(messages, tokenizer), "chosen": answer(row["preferred_output"]),
            "rejected": answer(row["non_preferred_output"])}


def _rendered(messages: list[dict[str, Any]], tokenizer: Any) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise JobError("chat-format training data needs a base model with a chat template")
    turns = [{"role": m.get("role"), "content": m.get("content") or ""} for m in messages]
    return str(tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False))


def _conform(ds: Any, columns: dict[str, str], alternatives: list[list[str]], what: str) -> tuple[Any, list[str]]:
    """Keep the columns the job uses, renamed from the data's own names, and drop rows with missing values."""
    needs = pick_columns(ds.column_names, columns, alternatives)
    if needs is None:
        wanted = " or ".join(str([columns.get(c, c) for c in alt]) for alt in alternatives)
        raise JobError(f"{what} has no column(s) {wanted} (has {ds.column_names}); map them with params.data.columns")
    sources = {columns.get(c, c): c for c in needs}
    ds = ds.select_columns(list(sources)).rename_columns({s: d for s, d in sources.items() if s != d})
    return ds.filter(lambda b: [all(b[c][i] is not None for c in needs) for i in range(len(b[needs[0]]))],
                     batched=True), needs


def _length_filter(ds: Any, data: DataSource, column: str) -> Any:
    low, high = data.min_length, data.max_length
    if low is None and high is None:
        return ds
    lo, hi = low or 0, high or float("inf")
    return ds.filter(lambda b: [lo <= len(str(t)) <= hi for t in b[column]], batched=True)


def prepare(rows: Splits, data: DataSource, alternatives: list[list[str]], split_eval: bool = True) -> Splits:
    """Column mapping, length filter, shuffle with seed, row cap and ``train_test_split`` when no eval split.

    ``alternatives`` are the column sets a job can work from (the first one present is used, for both splits).
    """
    columns, seed = data.columns, data.seed
    train, needs = _conform(rows.train, columns, alternatives, "training data")
    train = _length_filter(train, data, needs[0])
    evals = rows.eval
    if evals is not None:
        evals = _length_filter(_conform(evals, columns, [needs], "eval data")[0], data, needs[0])
    if data.shuffle:
        train = train.shuffle(seed=seed)
    if data.max_rows:
        train = train.select(range(min(len(train), data.max_rows)))
    if len(train) == 0:
        raise JobError("no training rows left after filtering")
    if evals is None and split_eval and data.test_size > 0 and len(train) >= 4:
        parts = train.train_test_split(test_size=data.test_size, seed=seed)
        train, evals = parts["train"], parts["test"]
    return Splits(train, evals)


def label_names(splits: Splits, given: list[str] | None, base: dict[int, str]) -> list[str]:
    """Class names: as given, else the base model's when the data fits them, else the data's own (sorted)."""
    values = set(splits.train["label"]) | (set(splits.eval["label"]) if splits.eval is not None else set())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        count = max(max(values) + 1, len(given or []), len(base))
        names = given or [base.get(i, str(i)) for i in range(count)]
        if max(values) >= len(names) or min(values) < 0:
            raise JobError(f"label ids {sorted(values)[:10]} do not fit {len(names)} labels")
        return names
    strings = {str(v) for v in values}
    for candidate in (given, [base[i] for i in sorted(base)]):
        if candidate and strings <= set(candidate):
            return list(candidate)
    if given:
        raise JobError(f"labels {sorted(strings - set(given))[:10]} are not in params.labels")
    return sorted(strings)


def tokenize_classification(ds: Any, tokenizer: Any, names: list[str], max_length: int) -> Any:
    """``text`` -> input ids (truncated); ``label`` -> class index."""
    index = {n: i for i, n in enumerate(names)}

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["labels"] = [v if isinstance(v, int) else index[str(v)] for v in batch["label"]]
        return dict(enc)
    return ds.map(encode, batched=True, remove_columns=ds.column_names)


def tokenize_causal(ds: Any, tokenizer: Any, max_length: int) -> Any:
    """``text`` (or ``prompt`` + ``completion``, loss on the completion only) -> ids and labels, EOS appended."""
    eos = tokenizer.eos_token_id

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        prompts = batch.get("prompt") or [""] * len(batch.get("text") or [])
        targets = batch.get("completion") or batch["text"]
        ids, labels = [], []
        for prompt, target in zip(prompts, targets):
            head = tokenizer(str(prompt), add_special_tokens=False)["input_ids"] if prompt else []
            tail = tokenizer(str(target), add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
            seq = (head + tail)[:max_length]
            ids.append(seq)
            labels.append(([IGNORE_INDEX] * len(head) + tail)[:max_length])
        return {"input_ids": ids, "attention_mask": [[1] * len(s) for s in ids], "labels": labels}
    out = ds.map(encode, batched=True, remove_columns=ds.column_names)
    return out.filter(lambda b: [any(x != IGNORE_INDEX for x in row) for row in b["labels"]], batched=True)


def collate(pad_id: int) -> Any:
    """Pad a list of tokenised rows into tensors (labels padded with IGNORE_INDEX when they are sequences)."""
    import torch

    def pad(rows: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        out = {
            "input_ids": torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in rows]),
            "attention_mask": torch.tensor([r["attention_mask"] + [0] * (width - len(r["attention_mask"]))
                                            for r in rows]),
        }
        if "token_type_ids" in rows[0]:
            out["token_type_ids"] = torch.tensor([r["token_type_ids"] + [0] * (width - len(r["token_type_ids"]))
                                                  for r in rows])
        labels = [r["labels"] for r in rows]
        if isinstance(labels[0], list):
            out["labels"] = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for lab in labels])
        else:
            out["labels"] = torch.tensor(labels)
        return out
    return pad

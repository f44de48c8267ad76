"""Small data sets the fine-tune tests write (a few hundred rows), and uploading them through the files API."""

from __future__ import annotations

import csv
import io
import json
import random
from typing import Any

import httpx

POSITIVE = ["good", "great", "happy", "lovely", "fine", "nice"]
NEGATIVE = ["bad", "awful", "sad", "terrible", "poor", "ugly"]
FILLER = ["the", "a", "movie", "day", "food", "it"]
PROMPTS = ["the answer is", "the sky is", "my mood is"]
TARGET = " blue and calm"


def sentiment_rows(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """A learnable toy task: three words of one polarity and a filler word; ``y`` is 1 for positive."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(POSITIVE if label else NEGATIVE, k=3) + [rng.choice(FILLER)]
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "y": label})
    return rows


def completion_rows(n: int = 200, seed: int = 1) -> list[dict[str, Any]]:
    """Prompt -> fixed completion: a causal LM trained on it visibly changes what it generates."""
    rng = random.Random(seed)
    return [{"prompt": rng.choice(PROMPTS), "completion": TARGET} for _ in range(n)]


def preference_rows(n: int = 120, seed: int = 2) -> list[dict[str, Any]]:
    """DPO rows: the same prompts, a preferred and a rejected continuation."""
    rng = random.Random(seed)
    return [{"prompt": rng.choice(PROMPTS), "chosen": TARGET, "rejected": " red and loud"} for _ in range(n)]


def corpus_rows(n: int = 300, seed: int = 3) -> list[dict[str, Any]]:
    """Sentences over a small vocabulary, for training tokenizers."""
    rng = random.Random(seed)
    words = ["the", "queue", "holds", "jobs", "for", "workers", "that", "keep", "models", "resident", "and",
             "stream", "progress", "to", "clients", "over", "http"]
    return [{"body": " ".join(rng.choices(words, k=rng.randint(5, 15))) + rng.choice(".!?")} for _ in range(n)]


def encode(rows: list[dict[str, Any]], fmt: str) -> bytes:
    """Rows as csv, jsonl or parquet bytes."""
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def upload(client: httpx.Client, rows: list[dict[str, Any]], fmt: str = "jsonl", name: str | None = None) -> str:
    """Upload rows through ``POST /v1/files``; returns the file id."""
    filename = name or f"data.{fmt}"
    resp = client.post("/v1/files", files={"file": (filename, encode(rows, fmt))})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])

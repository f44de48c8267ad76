"""batch_inference over local files: a parquet artifact with one output per row; rows done / total."""
from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import MODEL_ROOT
from tests.support.jobs import run, sse_events
from tests.support.models import tiny

DATA = MODEL_ROOT / "data"  # inside GPUQ_MODEL_ROOTS, where local datasets may live


@pytest.fixture(scope="module")
def sentiment() -> str:
    return tiny(MODEL_ROOT, "bert-sentiment")


def write(name: str, table: pa.Table) -> str:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / name
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    elif name.endswith(".csv"):
        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    return str(path)


def outputs(client: httpx.Client, job_id: str) -> pa.Table:
    resp = client.get(f"/v1/jobs/{job_id}/artifacts/outputs.parquet")
    assert resp.status_code == 200
    return pq.read_table(io.BytesIO(resp.content))


def test_jsonl_rows_each_get_an_output_and_a_bad_row_only_an_error(client: httpx.Client,
                                                                   sentiment: str) -> None:
    texts = ["good", "bad", "", "fine", "awful", "great", "meh"]
    path = write("reviews.jsonl", pa.table({"review": texts}))
    job = run(client, {"kind": "batch_inference", "model": sentiment,
                       "params": {"data": {"path": path, "column": "review"},
                                  "inference": {"task": "text-classification", "top_k": 2, "batch_size": 3}}})
    assert job["status"] == "succeeded", job
    assert job["result"]["rows"] == 7 and job["result"]["failed_rows"] == 1
    table = outputs(client, job["id"]).to_pylist()
    assert [r["row"] for r in table] == list(range(7))
    assert table[2]["output"] is None and "empty" in table[2]["error"]
    for r in table[:2] + table[3:]:
        labels = json.loads(r["output"])
        assert r["error"] is None and {x["label"] for x in labels} == {"NEGATIVE", "POSITIVE"}
    progress = [e["data"] for e in sse_events(client, job["id"]) if e["event"] == "progress"]
    assert progress[-1] == {"done": 7, "total": 7, "unit": "rows"}
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)


def test_csv_question_answering_maps_its_columns(client: httpx.Client) -> None:
    qa_model = tiny(MODEL_ROOT, "bert-qa")
    path = write("qa.csv", pa.table({"q": ["who?", "where?"], "ctx": ["Alice was here", "in Paris today"]}))
    job = run(client, {"kind": "batch_inference", "model": qa_model,
                       "params": {"data": {"path": path, "columns": {"question": "q", "context": "ctx"}},
                                  "inference": {"task": "question-answering"}}})
    assert job["status"] == "succeeded", job
    rows = outputs(client, job["id"]).to_pylist()
    contexts = ["Alice was here", "in Paris today"]
    for row, context in zip(rows, contexts):
        answer = json.loads(row["output"])
        assert context[answer["start"]:answer["end"]] == answer["answer"]


def test_parquet_embeddings_stop_at_max_rows(client: httpx.Client, models: dict[str, str]) -> None:
    path = write("sentences.parquet", pa.table({"text": [f"sentence {i}" for i in range(50)]}))
    job = run(client, {"kind": "batch_inference", "model": models["minilm"],
                       "params": {"data": {"path": path, "max_rows": 20},
                                  "inference": {"task": "feature-extraction", "normalize": True}}})
    assert job["status"] == "succeeded", job
    rows = outputs(client, job["id"]).to_pylist()
    assert len(rows) == 20 and all(len(json.loads(r["output"])) == 384 for r in rows)


def test_missing_column_fails_the_job_naming_the_field(client: httpx.Client, sentiment: str) -> None:
    path = write("nocol.jsonl", pa.table({"body": ["x"]}))
    job = run(client, {"kind": "batch_inference", "model": sentiment,
                       "params": {"data": {"path": path}, "inference": {"task": "text-classification"}}})
    assert job["status"] == "failed"
    assert job["error"]["field"] == "params.data.column" and "body" in job["error"]["message"]


def test_data_path_must_exist_inside_the_roots(client: httpx.Client, sentiment: str) -> None:
    resp = client.post("/v1/jobs", json={"kind": "batch_inference", "model": sentiment,
                                         "params": {"data": {"path": str(DATA / "absent.csv")},
                                                    "inference": {"task": "text-classification"}}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "params.data.path"
    assert not Path(DATA / "absent.csv").exists()


def test_rows_of_an_uploaded_file(client: httpx.Client, sentiment: str) -> None:
    texts = ["good", "bad", "fine"]
    body = "".join(json.dumps({"review": t}) + "\n" for t in texts).encode()
    upload = client.post("/v1/files", files={"file": ("reviews.jsonl", body)})
    assert upload.status_code == 201, upload.text
    job = run(client, {"kind": "batch_inference", "model": sentiment,
                       "params": {"data": {"file_id": upload.json()["id"], "column": "review"},
                                  "inference": {"task": "text-classification"}}})
    assert job["status"] == "succeeded", job
    table = outputs(client, job["id"]).to_pylist()
    assert [r["row"] for r in table] == [0, 1, 2] and all(r["error"] is None for r in table)

"""The blocking Python client against the real API: typed results, waits, events, retries, artifacts."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuq.client import (Client, InvalidInput, JobRecord, NotFound, RetryPolicy, ServiceUnavailable, Unauthorized,
                    WaitTimeout)
from gpuq.common.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import KEY_A
from tests.support.jobs import sse_events
from tests.support.processes import start_api
from tests.support.tcp_proxy import TcpProxy

FAST = RetryPolicy(attempts=8, backoff_s=0.1, backoff_max_s=0.5)


def _synthetic(steps: int = 1, step_ms: float = 0, **extra: object) -> dict[str, object]:
    return {"kind": "synthetic", "model": f"client-{uuid.uuid4().hex[:8]}",
            "params": {"steps": steps, "step_ms": step_ms, **extra}}


@pytest.fixture()
def gpuq(api_url: str) -> Iterator[Client]:
    with Client(api_url, KEY_A, retry=FAST) as c:
        yield c


def test_submit_and_wait_return_typed_records(gpuq: Client) -> None:
    job = gpuq.submit(**_synthetic(3))
    assert isinstance(job, JobRecord) and job.status in ("queued", "running", "succeeded")
    done = gpuq.wait(job.id, timeout=60)
    assert done.status == "succeeded" and done.result["steps"] == 3 and done.result["echo"] is None
    assert done.timings.run_ms is not None and done.progress == {"done": 3, "total": 3}
    assert job.id in [j.id for j in gpuq.list(kind="synthetic", limit=20)]


def test_submit_with_wait_uses_synchronous_mode(gpuq: Client) -> None:
    assert gpuq.submit(**_synthetic(2, 20), wait=30).status == "succeeded"


def test_submit_many_is_all_or_nothing_and_replays_with_its_key(gpuq: Client) -> None:
    jobs = [_synthetic(1), _synthetic(2), _synthetic(3)]
    done = gpuq.submit_many(jobs, idempotency_key="client-bulk-1", wait=30)
    assert [d.status for d in done] == ["succeeded"] * 3 and [d.result["steps"] for d in done] == [1, 2, 3]
    assert [d.id for d in gpuq.submit_many(jobs, idempotency_key="client-bulk-1")] == [d.id for d in done]
    with pytest.raises(InvalidInput) as err:
        gpuq.submit_many([_synthetic(1), {"kind": "teleport", "model": "x"}])
    assert err.value.field == "jobs.1.kind"


def test_wait_timeout_raises_and_the_job_goes_on(gpuq: Client) -> None:
    job = gpuq.submit(**_synthetic(40, 100))
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        gpuq.wait(job.id, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 10 and job.id in err.value.message
    assert gpuq.cancel(job.id).cancel_requested is True
    assert gpuq.wait(job.id, timeout=60).status == "cancelled"


def test_errors_are_gpuq_error_classes_naming_the_field(gpuq: Client, api_url: str) -> None:
    with pytest.raises(NotFound):
        gpuq.get("0" * 32)
    with pytest.raises(InvalidInput) as bad:
        gpuq.submit("teleport", "none")
    assert bad.value.field == "kind"
    with Client(api_url, "wrong-key", retry=FAST) as stranger, pytest.raises(Unauthorized):
        stranger.list()


def test_events_reconnect_with_last_event_id_when_the_connection_drops(gpuq: Client, api_url: str) -> None:
    job = gpuq.submit(**_synthetic(12, 150))
    proxy = TcpProxy("127.0.0.1", int(api_url.rsplit(":", 1)[1]))
    seen = []
    try:
        with Client(proxy.url, KEY_A, retry=FAST) as through_proxy:
            for event in through_proxy.events(job.id):
                seen.append(event)
                if len(seen) in (3, 7):
                    proxy.cut()
    finally:
        proxy.close()
    assert proxy.connections >= 3  # the first stream and one reconnect per cut
    full = [(e["id"], e["event"]) for e in sse_events(gpuq._http, job.id)]
    assert [(e.id, e.type) for e in seen] == full  # nothing lost, nothing twice
    assert seen[-1].type == "completed"


def test_a_submit_whose_answer_was_lost_is_retried_without_a_duplicate(gpuq: Client, api_url: str) -> None:
    proxy = TcpProxy("127.0.0.1", int(api_url.rsplit(":", 1)[1]))
    body = _synthetic(1)
    try:
        with Client(proxy.url, KEY_A, retry=FAST) as through_proxy:
            proxy.drop_responses = 1
            job = through_proxy.submit(**body)
    finally:
        proxy.close()
    assert proxy.connections == 2  # the answer of the first attempt never arrived
    same_model = [j for j in gpuq.list(kind="synthetic", limit=100) if j.model == body["model"]]
    assert [j.id for j in same_model] == [job.id]


def test_503_is_retried_with_backoff_until_the_store_is_back(service_env: dict[str, str], log_dir: Path,
                                                              tmp_path: Path) -> None:
    port = free_port()
    svc, url = start_api({**service_env, "GPUQ_REDIS_URL": f"redis://127.0.0.1:{port}/0"}, log_dir)
    redis = EmbeddedRedis(tmp_path / "late-redis", port=port)
    try:
        with Client(url, KEY_A, retry=RetryPolicy(attempts=2, backoff_s=0.05)) as impatient:
            with pytest.raises(ServiceUnavailable):
                impatient.list()
        threading.Timer(1.0, redis.start).start()
        with Client(url, KEY_A, retry=RetryPolicy(attempts=30, backoff_s=0.2, backoff_max_s=0.5)) as patient:
            assert patient.list() == []
    finally:
        svc.stop()
        redis.stop()


def test_large_results_download_as_artifacts_with_checked_digests(gpuq: Client, tmp_path: Path) -> None:
    job = gpuq.wait(gpuq.submit(**_synthetic(1, result_bytes=100_000)).id, timeout=60)
    assert job.result["artifact"] == "result.json"
    paths = gpuq.download_artifacts(job.id, tmp_path)
    assert [p.name for p in paths] == ["result.json"]
    assert json.loads(paths[0].read_text())["blob"] == "x" * 100_000
    single = gpuq.download_artifact(job.id, "result.json", tmp_path / "copy.json")
    assert single.read_bytes() == paths[0].read_bytes()
    with pytest.raises(NotFound):
        gpuq.download_artifact(job.id, "nope.bin", tmp_path)


def test_kinds_lists_the_registered_job_kinds(gpuq: Client) -> None:
    assert {"inference", "synthetic"} <= {k.kind for k in gpuq.kinds()}


def test_upload_file_posts_multipart(gpuq: Client, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "hello gpuq", "label": 1}\n{"text": "bye", "label": 0}\n')
    info = gpuq.upload_file(path)
    assert info["name"] == "rows.jsonl" and info["format"] == "jsonl" and info["rows"] == 2
    assert info["id"]
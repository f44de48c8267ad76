"""The ``gpuq`` CLI as a real subprocess against the session's API: output, --json and exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KEY_A
from tests.support.processes import ROOT


@pytest.fixture()
def gpuq(api_url: str) -> Any:
    env = {**os.environ, "GPUQ_API_URL": api_url, "GPUQ_API_KEY": KEY_A}

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gpuq.cli.main", *args], env=env, cwd=ROOT, text=True,
                              capture_output=True, timeout=timeout)
    return run


def test_submit_wait_prints_the_result_and_exits_0(gpuq: Any) -> None:
    done = gpuq("submit", "--kind", "synthetic", "--model", "cli", "--param", "steps=3", "--wait")
    assert done.returncode == 0, done.stderr
    assert "status    succeeded" in done.stdout and '"steps": 3' in done.stdout


def test_job_file_json_output_get_and_ls(gpuq: Any, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("kind: synthetic\nmodel: from-yaml\nparams:\n  steps: 2\n  step_ms: 10\npriority: low\n")
    sub = gpuq("submit", "-f", str(spec), "--param", "steps=4", "--json")
    assert sub.returncode == 0, sub.stderr
    job = json.loads(sub.stdout)
    assert job["model"] == "from-yaml" and job["priority"] == "low" and job["params"]["steps"] == 4
    got = gpuq("get", job["id"], "--wait", "60", "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["status"] == "succeeded"
    listed = gpuq("ls", "--kind", "synthetic", "--json")
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)]
    table = gpuq("ls", "--limit", "5")
    assert table.stdout.startswith("ID") and "SUBMITTED" in table.stdout.splitlines()[0]


def test_exit_codes_follow_the_job_outcome(gpuq: Any) -> None:
    failed = gpuq("submit", "--kind", "synthetic", "--model", "cli", "--param", "fail=error", "--wait")
    assert failed.returncode == 1 and "synthetic failure requested" in failed.stdout
    slow = gpuq("submit", "--kind", "synthetic", "--model", "cli", "--param", "steps=200", "--param", "step_ms=50",
                "-q")
    job_id = slow.stdout.strip()
    timed_out = gpuq("watch", job_id, "--timeout", "1")
    assert timed_out.returncode == 4 and "gave up after 1 s" in timed_out.stderr
    assert gpuq("cancel", job_id).returncode == 0
    assert gpuq("watch", job_id).returncode == 3


def test_refused_and_unreachable_api_have_their_own_exit_codes(gpuq: Any, api_url: str) -> None:
    bad_kind = gpuq("submit", "--kind", "teleport", "--model", "x")
    assert bad_kind.returncode == 5 and "field: kind" in bad_kind.stderr
    bad_key = gpuq("ls", "--api-key", "nope", "--json")
    assert bad_key.returncode == 5 and json.loads(bad_key.stdout)["error"]["type"] == "unauthorized"
    assert gpuq("get", "0" * 32).returncode == 5
    gone = gpuq("ls", "--api-url", "http://127.0.0.1:9")
    assert gone.returncode == 6 and "cannot reach the gpuq API" in gone.stderr
    usage = gpuq("submit", "--model", "x")
    assert usage.returncode == 2 and "--kind" in usage.stderr


def test_watch_draws_progress_and_logs_replays_events(gpuq: Any) -> None:
    job_id = gpuq("submit", "--kind", "synthetic", "--model", "cli", "--param", "steps=10",
                  "--param", "step_ms=30", "-q").stdout.strip()
    watched = gpuq("watch", job_id)
    assert watched.returncode == 0
    assert "[########################] 10/10 100%" in watched.stderr and "completed" in watched.stderr
    logs = gpuq("logs", job_id)
    kinds = [line.split()[2] for line in logs.stdout.splitlines()]
    assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "completed"
    as_json = gpuq("watch", job_id, "--json")
    assert [json.loads(line)["type"] for line in as_json.stdout.splitlines()][-1] == "completed"


def test_watch_streams_generated_text(gpuq: Any, models: dict[str, str], api_url: str) -> None:
    done = gpuq("submit", "--kind", "inference", "--model", models["gpt2"], "--input", "the queue",
                "--param", "task=text-generation", "--param", "max_new_tokens=12", "--param", "seed=1",
                "--param", "stream=true", "--watch")
    assert done.returncode == 0, done.stderr
    job_id = done.stderr.split("job ")[-1].split()[0]
    events = [json.loads(line) for line in gpuq("logs", job_id, "--json").stdout.splitlines()]
    chunks = [e["data"]["text"] for e in events if e["type"] == "output"]
    assert chunks and done.stdout == "".join(chunks) + "\n"
    result = json.loads(gpuq("get", job_id, "--json").stdout)["result"]
    assert "".join(chunks).strip() == result["generated_text"].strip()


def test_artifacts_ls_and_download(gpuq: Any, tmp_path: Path) -> None:
    job = json.loads(gpuq("submit", "--kind", "synthetic", "--model", "cli", "--param", "result_bytes=90000",
                          "--wait", "--json").stdout)
    listed = gpuq("artifacts", "ls", job["id"])
    assert "result.json" in listed.stdout
    got = gpuq("artifacts", "download", job["id"], "-o", str(tmp_path / "out"))
    assert got.returncode == 0 and (tmp_path / "out" / "result.json").stat().st_size > 90000
    missing = gpuq("artifacts", "download", job["id"], "nope.bin", "-o", str(tmp_path))
    assert missing.returncode == 5


def test_help_documents_exit_codes_and_configuration(gpuq: Any) -> None:
    top = gpuq("--help")
    assert "exit codes:" in top.stdout and "GPUQ_API_KEY" in top.stdout
    assert "4    gave up waiting" in gpuq("watch", "--help").stdout


def test_ls_has_a_task_column_and_survives_a_closed_pipe(gpuq: Any, api_url: str) -> None:
    for _ in range(3):
        gpuq("submit", "--kind", "synthetic", "--model", "cli", "--param", "steps=1", "-q")
    table = gpuq("ls", "--limit", "3")
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "KIND", "TASK"]
    env = {**os.environ, "GPUQ_API_URL": api_url, "GPUQ_API_KEY": KEY_A}
    for command in ("ls --limit 50", "logs " + gpuq("ls", "-q", "--limit", "1").stdout.strip()):
        piped = subprocess.run(f"{sys.executable} -m gpuq.cli.main {command} | head -1", shell=True, env=env, check=False,
                               cwd=ROOT, text=True, capture_output=True, timeout=120)
        assert piped.returncode == 0 and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_download_with_nothing_to_download_says_so_and_creates_nothing(gpuq: Any, tmp_path: Path) -> None:
    job = json.loads(gpuq("submit", "--kind", "synthetic", "--model", "cli", "--wait", "--json").stdout)
    got = gpuq("artifacts", "download", job["id"], "-o", str(tmp_path / "out"))
    assert got.returncode == 5 and "has nothing to download" in got.stderr
    assert not (tmp_path / "out").exists()


def test_files_upload_prints_the_id_a_job_can_use(gpuq: Any, tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("text\nfirst\nsecond\n")
    file_id = gpuq("files", "upload", str(data), "-q").stdout.strip()
    assert file_id.startswith("file-")
    assert file_id in gpuq("files", "ls").stdout
    described = gpuq("files", "upload", str(data))
    assert "2 rows" in described.stdout and "columns text" in described.stdout
    missing = gpuq("files", "upload", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_models_lists_what_jobs_can_name(gpuq: Any, models: dict[str, str]) -> None:
    table = gpuq("models")
    assert table.returncode == 0 and table.stdout.startswith("ID")
    assert any(line.split()[:2] == ["gpt2", "root"] for line in table.stdout.splitlines())
    assert "gpt2" in [m["id"] for m in json.loads(gpuq("models", "--json").stdout)]


def test_ctrl_c_in_watch_says_the_job_goes_on_and_how_to_reattach_or_cancel(gpuq: Any, api_url: str) -> None:
    import signal
    import time

    job_id = gpuq("submit", "--kind", "synthetic", "--model", "cli", "--param", "steps=300", "--param",
                  "step_ms=50", "-q").stdout.strip()
    env = {**os.environ, "GPUQ_API_URL": api_url, "GPUQ_API_KEY": KEY_A}
    watch = subprocess.Popen([sys.executable, "-m", "gpuq.cli.main", "watch", job_id], env=env, cwd=ROOT,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3)
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=30)
    assert watch.returncode == 130
    assert f"job {job_id} keeps running; `gpuq watch {job_id}` to re-attach, `gpuq cancel {job_id}` to stop it" in err
    assert gpuq("cancel", job_id).returncode == 0

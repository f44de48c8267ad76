"""Worker faults: killed mid-job, whole host lost, duplicates, poison jobs, hung jobs, rolling restarts."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from gpuq.common.dispatch import publish, publish_group
from gpuq.common.jobs.registry import get_spec
from tests.faults.conftest import Stack, wait_job
from tests.support.jobs import sse_events
from tests.support.processes import ROOT, wait_for

LONG = {"kind": "synthetic", "model": "none", "params": {"steps": 40, "step_ms": 100}}


def _started_on(stack: Stack, job_id: str) -> str:
    with stack.client() as c:
        return str(wait_job(c, job_id, ("running",))["worker"])


def test_worker_killed_mid_job_is_redelivered_and_finishes_once(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_api()
    with stack.client() as c:
        job = c.post("/v1/jobs", json=LONG).json()
        wait_for(lambda: (c.get(f"/v1/jobs/{job['id']}").json().get("progress") or {}).get("done", 0) >= 3, 30,
                 "progress")
        for child in stack.pool_children("w1"):
            child.kill()
        done = wait_job(c, job["id"])
        events = [e["event"] for e in sse_events(c, job["id"])]
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["result"]["attempt"] == 2
    assert events.count("completed") == 1 and events.count("started") == 2
    outcome.record("worker pool process SIGKILLed mid-job", "redelivered at once, finishes exactly once",
                   f"attempts={done['attempts']}, completed events={events.count('completed')}")


def test_whole_worker_host_lost_job_recovered_by_other_worker(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("doomed")
    stack.start_api()
    with stack.client() as c:
        job = c.post("/v1/jobs", json=LONG).json()
        assert _started_on(stack, job["id"]).startswith("doomed@")
        stack.start_worker("survivor")
        t0 = time.monotonic()
        stack.workers["doomed"].signal(signal.SIGKILL)  # parent and pool child: the whole host is gone
        done = wait_job(c, job["id"], timeout=90)
        recovered_s = time.monotonic() - t0
        events = [e["event"] for e in sse_events(c, job["id"])]
    assert done["status"] == "succeeded" and done["worker"].startswith("survivor@")
    assert events.count("completed") == 1
    outcome.record("all processes of a worker host SIGKILLed (lease TTL 3 s)",
                   "job recovered by another worker after the lease times out, one success",
                   f"recovered and finished in {recovered_s:.1f} s on survivor, completed events=1")


def test_worker_host_lost_mid_group_every_job_recovered_once(stack: Stack, outcome) -> None:
    """A group message (bulk submit) whose worker dies: each of its jobs finishes exactly once elsewhere."""
    from gpuq.api.submission import prepare
    from gpuq.common.records import JobStore
    from gpuq.common.schemas import JobRequest
    from gpuq.common.settings import Settings

    stack.start_redis()
    stack.start_worker("doomed")
    stack.start_api()
    settings = Settings(redis_url=stack.env["GPUQ_REDIS_URL"])
    # Grouping is for inference, whose jobs end in milliseconds; slow synthetic jobs in one group message
    # (the runner runs any kind's group, one job after another) leave time to kill the worker mid-group.
    jobs = [prepare(JobRequest.model_validate(LONG), "alpha", settings) for _ in range(3)]
    JobStore(stack.r).create_many([(j.fields, None, "") for j in jobs])
    ids = [j.fields["id"] for j in jobs]
    publish_group(stack.celery_app(), ids, get_spec("synthetic"), "normal")
    with stack.client() as c:
        assert _started_on(stack, ids[0]).startswith("doomed@")
        stack.start_worker("survivor")
        stack.workers["doomed"].signal(signal.SIGKILL)
        done = [wait_job(c, job_id, timeout=120) for job_id in ids]
        completed = [[e["event"] for e in sse_events(c, job_id)].count("completed") for job_id in ids]
    assert [d["status"] for d in done] == ["succeeded"] * 3, done
    assert all(d["worker"].startswith("survivor@") for d in done) and completed == [1, 1, 1]
    outcome.record("worker host SIGKILLed while running a group message (bulk submit)",
                   "every job of the group recovered by another worker, each finishes once",
                   f"3/3 succeeded on survivor, completed events={completed}")


def test_duplicate_delivery_of_a_running_job_is_dropped(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.start_api()
    with stack.client() as c:
        job = c.post("/v1/jobs", json=LONG).json()
        first = _started_on(stack, job["id"])
        # What the broker does when a visibility timeout expires under a running job: deliver it again.
        publish(stack.celery_app(), job["id"], get_spec("synthetic"), "normal")
        done = wait_job(c, job["id"])
        events = [e["event"] for e in sse_events(c, job["id"])]
    logs = "".join(w.log() for w in stack.workers.values())
    assert done["status"] == "succeeded" and done["worker"] == first and done["attempts"] == 1
    assert events.count("started") == 1 and events.count("completed") == 1
    assert "dropping duplicate delivery" in logs
    outcome.record("job redelivered while still running (visibility timeout shorter than the job)",
                   "never two executions at once", "duplicate found the lease held and was dropped; 1 start")


def test_visibility_timeout_shorter_than_a_job_time_limit_refuses_to_start(stack: Stack, outcome) -> None:
    stack.start_redis()
    env = {**stack.env, "GPUQ_JOB_TIME_LIMIT_S": "600", "GPUQ_VISIBILITY_TIMEOUT_S": "300"}
    proc = subprocess.run([sys.executable, "-m", "gpuq.cli.main", "worker", "--hostname", "bad@%h"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "GPUQ_VISIBILITY_TIMEOUT_S=300 must exceed the longest job time limit" in proc.stderr
    outcome.record("visibility timeout below a job time limit", "worker refuses to start",
                   f"exit code {proc.returncode} with a ConfigError naming GPUQ_VISIBILITY_TIMEOUT_S")


def test_poison_job_is_dead_lettered_and_other_jobs_flow(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_api()
    with stack.client() as c:
        poison = c.post("/v1/jobs", json={"kind": "synthetic", "model": "x", "params": {"fail": "crash"}}).json()
        done = wait_job(c, poison["id"], timeout=120)
        ok = wait_job(c, c.post("/v1/jobs", json={"kind": "synthetic", "model": "x", "params": {}}).json()["id"])
        dead = c.get("/v1/deadletter").json()["jobs"]
    assert done["status"] == "failed" and done["error"]["type"] == "worker_lost"
    assert "max_attempts=3" in done["error"]["message"]
    assert [j["id"] for j in dead] == [poison["id"]]
    assert ok["status"] == "succeeded"
    outcome.record("poison job that kills its worker every time", "failed after N attempts, dead-lettered",
                   f"failed ({done['error']['type']}) after 3 crashes, listed at /v1/deadletter; next job ok")


def test_hung_job_is_ended_by_time_limits_and_worker_recovers(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.env.update({"GPUQ_JOB_TIME_LIMIT_S": "2", "GPUQ_TIME_LIMIT_GRACE_S": "2"})
    stack.start_worker("w1")
    stack.start_api()
    with stack.client() as c:
        soft = wait_job(c, c.post("/v1/jobs", json={"kind": "synthetic", "model": "x",
                                                   "params": {"fail": "hang"}}).json()["id"])
        hard = wait_job(c, c.post("/v1/jobs", json={"kind": "synthetic", "model": "x",
                                                   "params": {"fail": "hang_hard"}}).json()["id"])
        after = wait_job(c, c.post("/v1/jobs", json={"kind": "synthetic", "model": "x", "params": {}}).json()["id"])
    assert soft["status"] == "failed" and soft["error"]["type"] == "timeout"
    assert hard["status"] == "failed" and hard["error"]["type"] == "timeout"
    assert "hard time limit" in hard["error"]["message"]
    assert after["status"] == "succeeded"
    outcome.record("hung job (soft limit honoured / ignored)", "failed with a timeout error; worker recovers",
                   "soft: timeout at 2 s; hard: pool process killed at 4 s, job failed timeout; next job ok")


def test_sigterm_during_long_job_requeues_it_at_once_for_another_worker(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("old")
    stack.start_api()
    with stack.client() as c:
        job = c.post("/v1/jobs", json={**LONG, "params": {"steps": 100, "step_ms": 100}}).json()
        assert _started_on(stack, job["id"]).startswith("old@")
        stack.start_worker("new")
        t0 = time.monotonic()
        stack.workers["old"].signal(signal.SIGTERM)
        wait_for(lambda: c.get(f"/v1/jobs/{job['id']}").json()["worker"].startswith("new@"), 30, "handover")
        handover_s = time.monotonic() - t0
        done = wait_job(c, job["id"])
        stack.workers["old"].proc.wait(30)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert handover_s < 10  # far below the visibility timeout (7200 s)
    outcome.record("SIGTERM to a worker during a long job (rolling restart)",
                   "job requeued at once and finished by another worker",
                   f"picked up by the new worker {handover_s:.1f} s after SIGTERM; old worker exited "
                   f"{stack.workers['old'].proc.returncode}")


def test_cancellation_queued_never_runs_running_stops_within_a_step_done_is_409(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_api()
    with stack.client() as c:
        running = c.post("/v1/jobs", json={**LONG, "params": {"steps": 100, "step_ms": 200}}).json()
        wait_for(lambda: c.get(f"/v1/jobs/{running['id']}").json()["progress"] is not None, 30, "progress")
        queued = c.post("/v1/jobs", json=LONG).json()
        assert c.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
        at_cancel = c.post(f"/v1/jobs/{running['id']}/cancel").json()["progress"]["done"]
        stopped = wait_job(c, running["id"], timeout=30)
        later = wait_job(c, c.post("/v1/jobs", json={"kind": "synthetic", "model": "x"}).json()["id"])
        never = c.get(f"/v1/jobs/{queued['id']}").json()
        again = c.post(f"/v1/jobs/{later['id']}/cancel")
    assert stopped["status"] == "cancelled" and stopped["progress"]["done"] <= at_cancel + 1
    assert never["status"] == "cancelled" and never["attempts"] == 0 and never["worker"] is None
    assert again.status_code == 409
    outcome.record("cancel queued / running / finished", "never runs / stops within one step / 409",
                   f"queued never started; running stopped at step {stopped['progress']['done']} "
                   f"(cancel at {at_cancel}); finished -> 409")

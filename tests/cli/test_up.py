"""``gpuq up`` as a user runs it: the banner, the logs, persisted dev secrets, shutdown on Ctrl-C and SIGTERM
with a job running (bounded, no traceback, no process left), and restarts of a service that dies."""
from __future__ import annotations

import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.jobs import submit, wait_status
from tests.support.processes import wait_for
from tests.support.upstack import Up

LONG = {"kind": "synthetic", "model": "x", "params": {"steps": 600, "step_ms": 100}}
STOP_BOUND_S = 30  # services first (soft shutdown 5 s), then Redis; far below the old 30 s hang + SIGKILL


@pytest.fixture()
def stacks() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.kill_all()


def _client(up: Up, key: str) -> httpx.Client:
    return httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _stop_with_a_job_running(up: Up, key: str, sig: int) -> tuple[str, float]:
    with _client(up, key) as c:
        job = submit(c, LONG)
        wait_status(c, job["id"], ("running",), timeout=120)
        wait_for(lambda: c.get(f"/v1/jobs/{job['id']}").json()["progress"] is not None, 60, "progress")
    took = up.signal(sig)
    assert up.proc.returncode == 0, up.err()
    assert not up.left_behind(), up.left_behind()
    assert took < STOP_BOUND_S
    logs = "".join(p.read_text(errors="replace") for p in (up.cwd / "var" / "logs").glob("*.log"))
    assert "Traceback" not in up.err() + up.out() + logs
    return job["id"], took


def test_ctrl_c_and_sigterm_stop_everything_and_the_running_job_comes_back(tmp_path: Path,
                                                                        stacks: list[Up]) -> None:
    first = Up(tmp_path)
    stacks.append(first)
    key = first.wait_banner()
    banner = first.out()
    assert banner.rstrip().splitlines()[-1] == f"export GPUQ_API_URL={first.url} GPUQ_API_KEY={key}"
    assert len(banner.splitlines()) < 20, banner  # no Celery, Flower or uvicorn banners on the terminal
    var = tmp_path / "var"
    for name in ("api", "worker-inference", "worker-jobs", "webhooks", "flower"):
        assert (var / "logs" / f"{name}.log").is_file(), name
    for secret in ("dev-api-key", "dev-webhook-secret"):
        assert stat.S_IMODE((var / secret).stat().st_mode) == 0o600
    assert (var / "dev-api-key").read_text().strip() == key
    interrupted, sigint_s = _stop_with_a_job_running(first, key, signal.SIGINT)

    second = Up(tmp_path, "--no-flower", env=first.env)  # same var/: the same key, the same Redis data
    stacks.append(second)
    assert second.wait_banner() == key
    with _client(second, key) as c:
        # Handed back at Ctrl-C (not failed, not lost): the new workers run it to the end.
        back = c.get(f"/v1/jobs/{interrupted}").json()
        assert back["status"] in ("queued", "running", "succeeded"), back
        assert c.post(f"/v1/jobs/{interrupted}/cancel").status_code in (200, 202, 409)
    _, sigterm_s = _stop_with_a_job_running(second, key, signal.SIGTERM)
    print(f"stop with a job running: SIGINT {sigint_s:.1f} s, SIGTERM {sigterm_s:.1f} s")


def test_a_service_that_dies_is_restarted_until_it_dies_too_often(tmp_path: Path, stacks: list[Up]) -> None:
    up = Up(tmp_path, "--no-flower")
    stacks.append(up)
    key = up.wait_banner()

    def sender() -> psutil.Process | None:
        for child in psutil.Process(up.proc.pid).children():
            try:
                if "webhooks" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    return child
            except psutil.Error:  # exited, not yet reaped by gpuq up
                continue
        return None

    first = sender()
    assert first is not None
    first.kill()
    wait_for(lambda: (s := sender()) is not None and s.pid != first.pid, 30, "the webhook sender restarted")
    with _client(up, key) as c:
        assert c.get("/readyz").status_code == 200
    killed = {first.pid}
    deadline = time.monotonic() + 120
    while up.proc.poll() is None and time.monotonic() < deadline:
        current = sender()
        if current is not None and current.pid not in killed:
            up.track()
            killed.add(current.pid)
            current.kill()
        time.sleep(0.1)
    assert up.proc.wait(60) == 1
    log = tmp_path / "var" / "logs" / "webhooks.log"
    assert "service 'webhooks' exited 6 times within 60 s" in up.err() and str(log) in up.err()
    assert "restarting it (5 of 5" in log.read_text()
    assert not up.left_behind(), up.left_behind()

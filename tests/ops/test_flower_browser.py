"""Flower against the session stack, in a real headless Chromium: the job and the worker are on its pages.

Also checks what gpuq adds for Flower: the kind in the task's kwargs column and live job progress
(custom ``task-progress`` events: state PROGRESS, "progress i/n" in the result column).
"""
from __future__ import annotations

import base64
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuq.common.embedded_redis import free_port
from tests.conftest import ARTIFACTS
from tests.support.jobs import submit, wait_status
from tests.support.processes import Service, wait_for

USER, PASSWORD = "ops", "flower-test-pw-0123"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def flower(service_env: dict[str, str], log_dir: Path, worker: Service) -> Iterator[str]:
    """``gpuq flower`` with basic auth, on loopback."""
    port = free_port()
    env = {**service_env, "GPUQ_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    svc = Service("flower", env, log_dir, "flower", "--port", str(port), "--address", "127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200, 60, "Flower /healthcheck")
    yield url
    svc.stop(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are required (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    # Log in: every request (pages and their XHRs) carries the basic-auth header.
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    yield driver
    driver.quit()


def test_flower_without_credentials_is_401(flower: str) -> None:
    for path in ("/", "/tasks", "/workers", "/api/workers", "/api/tasks"):
        assert httpx.get(f"{flower}{path}", timeout=10).status_code == 401, path
    wrong = httpx.get(f"{flower}/tasks", auth=(USER, "wrong"), timeout=10)
    assert wrong.status_code == 401
    assert httpx.get(f"{flower}/tasks", auth=(USER, PASSWORD), timeout=10).status_code == 200


def _task_info(flower: str, job_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{flower}/api/task/info/{job_id}", auth=(USER, PASSWORD), timeout=10)
    return resp.json() if resp.status_code == 200 else {}


def test_job_and_worker_show_in_flower_with_progress(flower: str, browser: Any, client: httpx.Client) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    node = f"main@{socket.gethostname()}"
    wait_for(lambda: node in httpx.get(f"{flower}/api/workers", auth=(USER, PASSWORD), timeout=10).json(), 30,
             "Flower to see the session worker")
    job = submit(client, {"kind": "synthetic", "model": "flower-demo",
                          "params": {"steps": 40, "step_ms": 150, "mode": "sleep"}})
    wait_for(lambda: _task_info(flower, job["id"]).get("state") == "PROGRESS", 30, "a task-progress event")
    live = _task_info(flower, job["id"])
    assert live["result"].startswith("progress ") and live["worker"] == node
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{flower}/task/{job['id']}")  # while it runs: state PROGRESS, "progress i/n (p%)"
    browser.save_screenshot(str(ARTIFACTS / "flower-task-running.png"))
    running_page = browser.find_element(By.TAG_NAME, "body").text
    assert wait_status(client, job["id"])["status"] == "succeeded"
    if "SUCCESS" not in running_page:  # the page was not loaded after the job ended
        assert "PROGRESS" in running_page and "progress " in running_page
    wait_for(lambda: _task_info(flower, job["id"]).get("state") == "SUCCESS", 30, "task-succeeded in Flower")

    browser.get(f"{flower}/tasks")
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), job["id"]))
    row = browser.find_element(By.XPATH, f"//tr[.//a[contains(., '{job['id']}')]]")
    browser.save_screenshot(str(ARTIFACTS / "flower-tasks.png"))
    assert "gpuq.run_job" in row.text and "SUCCESS" in row.text and node in row.text

    browser.get(f"{flower}/task/{job['id']}")
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "SUCCESS"))
    browser.save_screenshot(str(ARTIFACTS / "flower-task.png"))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert job["id"] in body and node in body and "'kind': 'synthetic'" in body

    browser.get(f"{flower}/workers")
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), node))
    assert "Online" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(ARTIFACTS / "flower-workers.png"))

"""The demo UI (``gpuq ui``) driven in headless Chromium: type a prompt, click Submit, see the result."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuq.common.embedded_redis import free_port
from tests.conftest import ARTIFACTS, KEY_A
from tests.support.browser import chromium
from tests.support.processes import Service, wait_for


@pytest.fixture(scope="module")
def ui_url(service_env: dict[str, str], log_dir: Path, api_url: str, models: dict[str, str]) -> Iterator[str]:
    port = free_port()
    svc = Service("ui", service_env, log_dir, "ui", "--port", str(port), "--api-url", api_url, "--api-key", KEY_A,
                  "--model", models["gpt2"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, 120, "the demo UI")
        yield url
    finally:
        svc.stop()


@pytest.fixture()
def browser() -> Iterator[object]:
    driver = chromium(window="1280,1400")
    yield driver
    driver.quit()


def test_submitting_text_generation_in_the_browser_shows_progress_and_the_result(
        browser: object, ui_url: str, client: httpx.Client) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(ui_url)  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 120)
    prompt = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    prompt.send_keys("the queue hums")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button#submit"))).click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"), "succeeded"))
    status = driver.find_element(By.CSS_SELECTOR, "#status").text  # type: ignore[attr-defined]
    job_id = status.split("Job")[1].split()[0].strip("`")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#output textarea").get_attribute("value"))
    shown = driver.find_element(By.CSS_SELECTOR, "#output textarea").get_attribute("value")  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "demo-ui.png"))  # type: ignore[attr-defined]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["params"]["task"] == "text-generation"
    assert shown.strip() == job["result"]["generated_text"].strip() and shown.strip()

"""/docs and /redoc render in a real headless Chromium that can reach nothing but the API (no CDN)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser import chromium

# Every host name fails to resolve except loopback: a page that needs a CDN stays blank.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chromium(OFFLINE)
    yield driver
    driver.quit()


def _rendered(driver: Any, url: str, selector: str) -> list[str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))
    return [e.get_attribute("textContent") or "" for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def test_swagger_ui_lists_the_operations_with_its_assets_from_the_api(browser: Any, api_url: str) -> None:
    page = httpx.get(f"{api_url}/docs").text
    assert "cdn." not in page and "/static/docs/swagger-ui-bundle.js" in page
    paths = _rendered(browser, f"{api_url}/docs", ".opblock-summary-path")
    assert "/v1/jobs" in paths and "/v1/models" in paths and "/v1/files" in paths


def test_redoc_renders_the_operations_offline(browser: Any, api_url: str) -> None:
    page = httpx.get(f"{api_url}/redoc").text
    assert "cdn." not in page and "fonts.googleapis" not in page
    sections = _rendered(browser, f"{api_url}/redoc", "[data-section-id^='operation/']")
    assert len(sections) >= 10
    assert any("/v1/models" in text for text in sections)

"""Headless Chromium for the browser tests (Flower, the demo UI, the API docs).

Missing chromium or chromedriver fails the test with the one line that fixes it: ./scripts/test installs them
when it runs as root, so a skip would only hide a browser test that never ran.
"""
from __future__ import annotations

import shutil
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver (./scripts/test does it when run as root)"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")


def chromium(*extra: str, window: str = "1400,900") -> Any:
    """A headless Chromium driven by selenium; the caller quits it."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"chromium and chromedriver are required: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--window-size={window}", *extra):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver

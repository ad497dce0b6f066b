"""A real headless Chromium for the tests that look at pages (the docs site, the run
viewer): Debian's chromium and chromium-driver, with the browser console's log kept."""

from __future__ import annotations

import shutil

import pytest


def _browser(width: int = 1280, height: int = 900):
    """A headless Chrome driver; skips the test where selenium or chromium is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the docs extra")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chrome or not driver_bin:
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_bin), options=opts)


def severe_logs(driver) -> list[dict]:
    """The browser console's errors since the last read (script errors, failed loads)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]

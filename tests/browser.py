"""Debian's Chromium, headless, driven by Selenium, with a fake microphone that plays
a WAV file (Chromium's own test switches)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        if path := shutil.which(name):
            return path
    return None


@contextmanager
def chromium(microphone: Path, log_dir: Path) -> Iterator[Any]:
    """A headless Chromium whose microphone plays ``microphone`` once (then
    silence), permission granted; skips the test, saying why, only where Chromium
    or its driver is missing or cannot start."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.skip(f"selenium is not installed ({err}); make setup installs it")
    binary, driver_path = _find(CHROMIUM), _find(DRIVER)
    if binary is None or driver_path is None:
        pytest.skip(
            "Chromium or chromedriver not found (Debian: apt-get install chromium "
            "chromium-driver; make setup does it)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1000,700",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        # %noloop: play the file once, then silence (Chromium's FileSource).
        f"--use-file-for-fake-audio-capture={microphone}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses root otherwise
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver_path, log_output=str(log_dir / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        pytest.skip(f"Chromium cannot start here: {first}")
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, driver: Any = None
) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` (and
    the page's console) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            console = ""
            if driver is not None:
                logs = driver.get_log("browser")
                console = "\n".join(e["message"] for e in logs[-20:])
            raise AssertionError(f"timed out waiting for {what}\n{console}")
        time.sleep(0.1)

"""Headless Chromium for the report's browser tests (Debian's chromium and chromium-driver).

Tests skip with the reason when the browser is missing, except under ``CI`` (set), where a
missing browser fails: ``make test`` installs it (the ``browser`` target)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: The network is closed: without these, Chromium waits on connections it cannot make.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def require_browser() -> None:
    """Skip (fail under ``CI``) unless Chromium, its driver and selenium are installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if not missing:
        return
    why = (
        f"missing {', '.join(missing)}: run 'make browser' "
        "(apt-get install -y chromium chromium-driver)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the browser tests cannot run: {why}")
    pytest.skip(why)


@contextmanager
def chromium() -> Iterator:
    """A selenium driver of headless Chromium with a fresh profile, quit afterwards."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fsarbench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

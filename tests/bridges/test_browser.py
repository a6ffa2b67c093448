"""`tagmatch serve` in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium): the page starts the app and draws it (textual-serve marks the page `-first-byte` when
the app's screen arrives), and a key typed into the page opens the saved scan (its review holds
the scan's lock, which the test then finds taken). Opt-in: `make test-browser` installs the
browser and runs this; `make test` skips it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import serving

from tagmatch.errors import TagmatchError
from tagmatch.fsutil import document_lock

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.environ.get("TAGMATCH_BROWSER_TEST") or not shutil.which("chromedriver"),
    reason="opt-in: make test-browser (needs chromium and chromium-driver)")]


def _until(condition, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.2)


def _locked(path: Path) -> bool:
    try:
        with document_lock(path):
            return False
    except TagmatchError:
        return True


def test_a_browser_shows_home_and_a_key_opens_the_scan(saved_scan, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    scan = next(Path(saved_scan["TAGMATCH_SCANS"]).glob("*.json"))
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800"):
        options.add_argument(arg)
    with serving(env=saved_scan) as (port, _):
        browser = webdriver.Chrome(options=options)
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            _until(lambda: "-first-byte" in (browser.find_element(By.TAG_NAME, "body").get_attribute("class") or ""))
            time.sleep(2)  # Home mounts and lists the scans
            browser.save_screenshot(str(tmp_path / "home.png"))
            assert not _locked(scan)
            browser.find_element(By.CSS_SELECTOR, ".textual-terminal textarea").send_keys(Keys.ENTER)
            _until(lambda: _locked(scan))  # the review of that scan is open in the served app
            browser.save_screenshot(str(tmp_path / "review.png"))
        finally:
            browser.quit()
    assert (tmp_path / "home.png").stat().st_size > 10_000

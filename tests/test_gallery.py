"""index.html in a real browser: headless Chromium opens it from file://, every image loads, no console error.

Needs Debian's chromium and chromium-driver (.ci/run installs them) and the
selenium test extra. Without them the test is skipped, unless
CNNX_REQUIRE_BROWSER=1 (as in CI) makes that a failure.
"""

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnx.cli import app

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ARTIFACTS = Path(os.environ.get("CNNX_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def browser():
    """A headless Chromium driven by chromedriver, or a skip (a failure when CNNX_REQUIRE_BROWSER=1)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if not (chromium and driver_path and webdriver):
        message = "headless Chromium needs Debian's chromium, chromium-driver and the selenium extra"
        if os.environ.get("CNNX_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1200,2400",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def test_index_html_loads_every_image_without_console_errors(tmp_path):
    """The gallery of a real run opens offline; every image has loaded (naturalWidth > 0); the console has no error."""
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pipeline", str(SAMPLES / "chelsea.png"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    driver = browser()
    try:
        driver.get((out / "index.html").as_uri())
        driver.execute_script("return document.readyState")  # get() returns once the page has loaded
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
        )
        assert len(images) == 7  # a montage for the input and for each of the six stages
        assert all(complete and width > 0 for _, complete, width in images), images
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "index-html.png"))
        links = driver.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'));")
        assert all(not link.startswith(("http:", "https:", "//")) for link in links)
        assert all((out / link).exists() for link in links)
    finally:
        driver.quit()

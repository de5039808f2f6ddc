"""Shared fixtures: the plain-loop references are imported by name; a headless Chromium that cleans up after itself;
and a check that the whole run leaves nothing behind in the temporary folder."""

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# The plain-loop references in tests/reference.py are imported by name.
sys.path.insert(0, str(Path(__file__).parent))


def start_browser(*flags: str):
    """A headless Chromium driven by chromedriver, or a skip (a failure when CNNX_REQUIRE_BROWSER=1); its profile
    folder goes when it quits."""
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
        *flags,
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile = tempfile.mkdtemp(prefix="cnnx-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    quit_driver = driver.quit

    def quit_and_clean() -> None:
        try:
            quit_driver()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


@pytest.fixture
def browser():
    """A headless Chromium for one test (see ``start_browser``)."""
    driver = start_browser()
    yield driver
    with contextlib.suppress(Exception):  # quit already by the test
        driver.quit()


@pytest.fixture
def camera_browser():
    """A headless Chromium whose camera is Chromium's synthetic test stream, allowed without asking."""
    driver = start_browser("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    yield driver
    with contextlib.suppress(Exception):
        driver.quit()


def pytest_collection_modifyitems(config, items) -> None:
    """What needs Chromium is slow (a browser takes a second or two to start): it leaves the fast loop."""
    for item in items:
        if any(name.endswith("browser") for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


# The run's own temporary folder: every test, and every process a test starts, makes its temporary files there.
_TEMPORARY = Path(tempfile.mkdtemp(prefix="cnnx-tests-"))


def pytest_configure(config) -> None:
    os.environ["TMPDIR"] = str(_TEMPORARY)
    tempfile.tempdir = str(_TEMPORARY)


# What the oracles' libraries keep there for their own sake, whatever a test does: ONNX Runtime's telemetry writes
# its session file on import, and PyTorch's exporter its compile cache.
_LIBRARIES_OWN = (".ses", "torchinductor_")


def pytest_sessionfinish(session, exitstatus) -> None:
    """The run fails if the tests left anything in the temporary folder besides pytest's own tmp_path folders (and
    the libraries' own files above)."""
    left = sorted(p.name for p in _TEMPORARY.iterdir()
                  if not p.name.startswith(("pytest-of-", *_LIBRARIES_OWN)))
    if left:
        session.config.get_terminal_writer().line(f"the tests left {len(left)} entries in the temporary folder: "
                                                  f"{', '.join(left[:8])}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(_TEMPORARY, ignore_errors=True)

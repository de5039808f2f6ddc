"""Photograph a real `cnnx serve` session for the README: a conv value clicked, its arithmetic shown.

Run from the repository root after `pip install -e ".[test]"`, with Debian's chromium and chromium-driver:

    python tools/serve_figure.py

It starts `cnnx serve` on the shipped photo, opens the printed address in
headless Chromium 1000 px wide, clicks the middle of the first conv stage's
first map, and saves the top of the page as docs/serve-click.png.
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "serve-click.png"


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,900",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='cnnx-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def main() -> None:
    server = subprocess.Popen([sys.executable, "-m", "cnnx", "serve", str(ROOT / "samples" / "chelsea.png"),
                               "--no-browser"], stdout=subprocess.PIPE, text=True)
    driver = None
    try:
        url = server.stdout.readline().split()[3]
        driver = chromium()
        driver.get(url)
        tile = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#stage-1 figure img"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)
        time.sleep(1)  # the page's script has read the manifest
        ActionChains(driver).move_to_element(tile).click().perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", tile)  # the maps below the panel
        time.sleep(0.5)
        driver.save_screenshot(str(TARGET))
        with Image.open(TARGET) as shot:
            shot.convert("RGB").save(TARGET, optimize=True)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

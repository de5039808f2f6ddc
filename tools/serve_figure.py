"""Photograph a real `cnnx serve` session for the docs: the first view, a stage opened from the flow, a clicked
value's arithmetic, the stage editor, the lesson and the camera.

Run from the repository root after `pip install -e ".[test]"`, with Debian's chromium and chromium-driver:

    python tools/serve_figure.py

It starts `cnnx serve` on the shipped photo, opens the printed address in
headless Chromium (its camera the synthetic test stream) and saves into docs/:
serve-first.png (1400 px wide: the whole network at a glance), serve-stage.png
(the flow's second step clicked: its stage opened under the flow), serve-click.png
(1000 px: the middle of the first conv stage's first map clicked),
serve-editor.png (the stage editor with a bank filter picked), serve-lesson.png
(the lesson's convolution step), serve-camera.png (the camera's frames
through the stages) and serve-700.png (at 700 px: a clicked value's sheet
under the map, and the lesson).
"""

import io
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
DOCS = ROOT / "docs"


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='cnnx-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def opened(driver, url: str, width: int):
    driver.set_window_size(width, 900)
    driver.get(url)
    tile = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#stage-1 figure img"))
    time.sleep(1)  # the page's script has read the manifest
    return tile


def save(driver, name: str) -> None:
    target = DOCS / name
    driver.save_screenshot(str(target))
    with Image.open(target) as shot:
        shot.convert("RGB").save(target, optimize=True)
    print(f"wrote {target.relative_to(ROOT)}")


def side_by_side(shots: list[Image.Image], target: Path) -> None:
    """Screenshots in a row on white, 16 px apart."""
    sheet = Image.new("RGB", (sum(s.width for s in shots) + 16 * (len(shots) - 1), max(s.height for s in shots)),
                      "white")
    x = 0
    for shot in shots:
        sheet.paste(shot.convert("RGB"), (x, 0))
        x += shot.width + 16
    sheet.save(target, optimize=True)
    print(f"wrote {target.relative_to(ROOT)}")


def main() -> None:
    server = subprocess.Popen([sys.executable, "-m", "cnnx", "serve", str(ROOT / "samples" / "chelsea.png"),
                               "--no-browser"], stdout=subprocess.PIPE, text=True)
    driver = None
    try:
        url = server.stdout.readline().split()[3]
        driver = chromium()
        opened(driver, url, 1400)
        save(driver, "serve-first.png")
        driver.find_element(By.CSS_SELECTOR, 'header .flow a[href="#stage-2"]').click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-stage-view"))
        save(driver, "serve-stage.png")
        tile = opened(driver, url, 1000)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)
        ActionChains(driver).move_to_element(tile).click().perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", tile)  # the maps below the panel
        time.sleep(0.5)
        save(driver, "serve-click.png")
        opened(driver, url, 1000)
        driver.find_element(By.CSS_SELECTOR, "#cnnx-stages summary").click()
        driver.find_element(By.ID, "cnnx-add-kind").send_keys("conv")
        driver.find_element(By.CSS_SELECTOR, '#cnnx-bank-picker button[title="sobel_x"]').click()
        save(driver, "serve-editor.png")
        opened(driver, url, 1000)
        driver.find_element(By.ID, "cnnx-lesson").click()
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "cnnx-lesson-next"))
        driver.find_element(By.ID, "cnnx-lesson-next").click()
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "cnnx-lesson-window").text)
        save(driver, "serve-lesson.png")
        opened(driver, url, 1000)
        driver.find_element(By.ID, "cnnx-camera-start").click()
        WebDriverWait(driver, 30).until(
            lambda d: int(d.find_element(By.ID, "cnnx-camera").get_attribute("data-frames") or 0) >= 20)
        save(driver, "serve-camera.png")
        narrow = []
        tile = opened(driver, url, 700)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)
        ActionChains(driver).move_to_element(tile).click().perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        time.sleep(0.5)
        narrow.append(Image.open(io.BytesIO(driver.get_screenshot_as_png())))
        opened(driver, url, 700)
        driver.find_element(By.ID, "cnnx-lesson").click()
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "cnnx-lesson-next"))
        driver.find_element(By.ID, "cnnx-lesson-next").click()
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "cnnx-lesson-window").text)
        narrow.append(Image.open(io.BytesIO(driver.get_screenshot_as_png())))
        side_by_side(narrow, DOCS / "serve-700.png")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

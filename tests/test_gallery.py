"""index.html in a real browser: headless Chromium opens it from file://, every image loads, no console error.

Needs Debian's chromium and chromium-driver (.ci/run installs them) and the
selenium test extra. Without them the test is skipped, unless
CNNX_REQUIRE_BROWSER=1 (as in CI) makes that a failure.
"""

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

try:
    from selenium.webdriver.support.wait import WebDriverWait
except ImportError:  # the test is skipped without selenium
    WebDriverWait = None

from cnnx.app.cli import app

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ARTIFACTS = Path(os.environ.get("CNNX_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def _run(tmp_path, *args) -> Path:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pipeline", *map(str, args), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _shapes_drawing(tmp_path) -> Path:
    from PIL import Image, ImageDraw

    path = tmp_path / "star.png"
    picture = Image.new("L", (160, 160), 255)
    points = [(80 + (60 if k % 2 == 0 else 24) * math.cos(-math.pi / 2 + k * math.pi / 5),
               80 + (60 if k % 2 == 0 else 24) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    ImageDraw.Draw(picture).polygon(points, fill=0)
    picture.save(path)
    return path


def test_the_flow_shows_every_stage_small_and_links_to_its_card(tmp_path):
    """The page opens with the network at a glance: the input, each stage (its first 16 maps' tiles, at most) and
    the model's answer, in order, each a link to its card on the page."""
    from html.parser import HTMLParser

    out = _run(tmp_path, _shapes_drawing(tmp_path), "--model", "shapes")
    manifest = json.loads((out / "manifest.json").read_text())

    class Flow(HTMLParser):
        def __init__(self):
            super().__init__()
            self.inside, self.steps, self.ids = False, [], set()

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.ids.add(attrs.get("id"))
            if tag == "nav" and "flow" in (attrs.get("class") or ""):
                self.inside = True
            elif self.inside and tag == "a":
                self.steps.append([attrs["href"], []])
            elif self.inside and tag == "img":
                self.steps[-1][1].append(attrs["src"])

        def handle_endtag(self, tag):
            self.inside = self.inside and tag != "nav"

    page = Flow()
    page.feed((out / "index.html").read_text())
    stages = manifest["stages"]
    assert [href for href, _ in page.steps] == [f"#stage-{k}" for k in range(len(stages))] + ["#answer"]
    assert all(href[1:] in page.ids for href, _ in page.steps)
    for (_, tiles), stage in zip(page.steps, stages, strict=False):
        assert len(tiles) == min(16, len(stage["maps"])) and all((out / tile).is_file() for tile in tiles)


def test_a_deep_networks_flow_is_in_blocks_of_one_map_size(tmp_path):
    """Past twelve steps the flow is shown in blocks, each the run of stages whose maps share a size, labelled with
    that size and its count of stages; every stage is still a step, in order, and a short flow has no blocks."""
    from html.parser import HTMLParser

    round_ = "conv(random:2, padding=1) -> relu -> conv(random:2, padding=1) -> relu -> maxpool(2)"
    from PIL import Image

    with Image.open(SAMPLES / "stripes.png") as stripes:
        stripes.resize((32, 32)).save(tmp_path / "small.png")
    out = _run(tmp_path, tmp_path / "small.png", "--spec", " -> ".join([round_] * 3))

    class Blocks(HTMLParser):
        def __init__(self):
            super().__init__()
            self.blocks, self.label = [], False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "li" and attrs.get("class") == "block":
                self.blocks.append(["", []])
                self.label = True
            elif tag == "a" and self.blocks and attrs["href"].startswith("#stage-"):
                self.blocks[-1][1].append(int(attrs["href"].removeprefix("#stage-")))

        def handle_data(self, data):
            if self.label:
                self.blocks[-1][0] += data

        def handle_endtag(self, tag):
            self.label = self.label and tag != "span"

    page = Blocks()
    page.feed((out / "index.html").read_text())
    # input and two convs with their ReLUs at 32, the pool and the next round at 16, then 8, then the last pool's 4
    assert page.blocks == [["32x32 maps, 5 stages", [0, 1, 2, 3, 4]], ["16x16 maps, 5 stages", [5, 6, 7, 8, 9]],
                           ["8x8 maps, 5 stages", [10, 11, 12, 13, 14]], ["4x4 maps, 1 stage", [15]]]
    short = Blocks()
    short.feed((_run(tmp_path / "short", SAMPLES / "stripes.png") / "index.html").read_text())
    assert short.blocks == []


@pytest.mark.parametrize("case", ["chelsea", "model"])
@pytest.mark.parametrize("width", [1400, 700])
@pytest.mark.slow
def test_index_html_reads_well_at_every_width(tmp_path, case, width, browser):
    """The page of a real run, offline, at 1400 and 700 px: every image loads, nothing overflows the window,
    every stage has its paragraph in words, the model's answer shows class names; the console has no error."""
    if case == "chelsea":
        out = _run(tmp_path, SAMPLES / "chelsea.png")
    else:
        out = _run(tmp_path, _shapes_drawing(tmp_path), "--model", "shapes")
    manifest = json.loads((out / "manifest.json").read_text())
    driver = browser
    try:
        driver.set_window_size(width, 1600)
        driver.get((out / "index.html").as_uri())
        driver.execute_script("return document.readyState")  # get() returns once the page has loaded
        driver.execute_script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
        )
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
        )
        maps = sum(len(stage["maps"]) for stage in manifest["stages"])
        small = sum(min(16, len(stage["maps"])) for stage in manifest["stages"])
        # every map's tile, every stage's colour bar, and up to 16 maps of each stage again, small, in the flow
        assert len(images) == maps + len(manifest["stages"]) + small
        assert all(complete and width > 0 for _, complete, width in images), images
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, overflow
        stories = driver.execute_script(
            "return Array.from(document.querySelectorAll('.story')).map(p => p.textContent)"
        )
        assert len(stories) == len(manifest["stages"]) and all(len(story) > 40 for story in stories)
        fields = driver.execute_script("return document.querySelectorAll('.field svg rect').length")
        assert fields == len(manifest["stages"]) - 1  # the receptive field on the input, for every stage after it
        if case == "model":
            answer = driver.execute_script("return document.querySelector('#answer').textContent")
            assert "star" in answer and "circle" in answer
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        if width == 1400:  # the whole network at a glance: every step of the flow on the first screen of 1400x900
            driver.set_window_size(1400, 900)
            lowest = driver.execute_script("return Math.max(...Array.from(document.querySelectorAll('.flow a'))"
                                           ".map(a => a.getBoundingClientRect().bottom)) - window.innerHeight")
            assert lowest <= 0, lowest
        ARTIFACTS.mkdir(exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height, 8000))
        driver.save_screenshot(str(ARTIFACTS / f"index-html-{case}-{width}.png"))
        links = driver.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'));")
        assert all(not link.startswith(("http:", "https:", "//")) for link in links)
        assert all((out / link.partition("#")[0]).exists() for link in links if not link.startswith("#"))
    finally:
        driver.quit()

"""cnnx serve: a real server on a loopback port, its promises checked over HTTP and in headless Chromium."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from served import request

from cnnx.app.serve import BODY_LIMIT, make_server
from cnnx.app.session import Session
from cnnx.app.shell import source_from
from cnnx.render.draw import Style


@pytest.fixture
def served(tmp_path):
    """A server on a free loopback port for a small image and the lesson's stages; its port, token and session."""
    image = tmp_path / "a.png"
    stripes = (np.arange(64) // 4 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.tile(stripes, (48, 1))).save(image)
    session = Session(image, lambda text: source_from(text, None, None, None, None, None), Style(),
                      folder=tmp_path / "session")
    session.recompute()
    server, url = make_server(session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    yield port, url.partition("token=")[2], session
    server.shutdown()
    server.server_close()
    session.close()


@pytest.mark.slow
def test_the_printed_url_sets_the_token_and_the_page_shows_the_run(served):
    """The URL with its token sets a cookie and leads to the page: the run's stages and the live toolbar."""
    port, token, _ = served
    status, headers, _ = request(port, f"/?token={token}")
    cookie = headers["Set-Cookie"]
    assert status == 303 and f"cnnx-token-{port}=" in cookie and "SameSite=Strict" in cookie and "HttpOnly" in cookie
    status, headers, page = request(port, "/", token=token)
    assert status == 200 and b'id="cnnx-live"' in page and b'<base href="/run/1/">' in page
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.parametrize(
    "case",
    ["no token", "wrong token", "wrong host", "traversal", "encoded traversal", "absolute", "numbered traversal",
     "unknown run", "unknown", "too large", "bad value query", "bad form"],
)
@pytest.mark.slow
def test_requests_outside_the_promise_get_one_line_4xx(served, case):
    """No token or the wrong Host: 403; paths outside the run: 404; a body over the limit: 413; malformed: 400."""
    port, token, _ = served
    if case == "no token":
        status, _, body = request(port, "/")
        assert status == 403
    elif case == "wrong token":
        status, _, body = request(port, "/", token="guess")
        assert status == 403
    elif case == "wrong host":
        status, _, body = request(port, "/", token=token, host=f"attacker.example:{port}")
        assert status == 403
    elif case in ("traversal", "encoded traversal", "absolute", "numbered traversal", "unknown run"):
        path = {"traversal": "/run/../../../../etc/passwd", "encoded traversal": "/run/..%2f..%2f..%2fetc%2fpasswd",
                "absolute": "/run//etc/passwd", "numbered traversal": "/run/1/../../../../etc/passwd",
                "unknown run": "/run/999/manifest.json"}[case]
        status, _, body = request(port, path, token=token)
        assert status == 404
    elif case == "unknown":
        status, _, body = request(port, "/secret", token=token)
        assert status == 404
    elif case == "too large":
        status, _, body = request(port, "/api/image", method="POST", token=token,
                                  headers={"Content-Length": str(BODY_LIMIT + 1)}, body=b"")
        assert status == 413
    elif case == "bad value query":
        status, _, body = request(port, "/api/value?stage=one", token=token)
        assert status == 400
    else:
        status, _, body = request(port, "/api/spec", method="POST", token=token, body=b"spec=conv(&&&=",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status in (303, 400)
    assert json.loads(body)["error"] if body else True
    assert request(port, "/", token=token)[0] == 200  # the server is still there


@pytest.mark.slow
def test_the_value_under_the_pointer_is_the_arrays(served):
    """/api/value gives exactly the stage's value there, with its receptive field."""
    port, token, session = served
    status, _, body = request(port, "/api/value?stage=1&channel=0&row=10&col=13", token=token)
    value = json.loads(body)
    raw = np.load(session.run / "01_conv" / "stage.npy")
    assert status == 200 and value["value"] == float(raw[0, 10, 13]) and value["receptive_field"] == [3, 3]
    assert request(port, "/api/value?stage=1&channel=9&row=0&col=0", token=token)[0] == 400


@pytest.mark.slow
def test_editing_the_stages_recomputes_and_a_bad_spec_keeps_the_run(served):
    """A new spec makes a new run; a spec that cannot be read says why and keeps the run before."""
    port, token, session = served
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = request(port, "/api/spec", method="POST", token=token, body=b"spec=conv(sobel_y)+-%3E+relu",
                           headers=form)
    assert status == 303 and session.spec == "conv(sobel_y) -> relu"
    manifest = json.loads(request(port, "/run/manifest.json", token=token)[2])
    assert [s["operation"] for s in manifest["stages"]] == ["input", "conv", "relu"]
    request(port, "/api/spec", method="POST", token=token, body=b"spec=conv(nonsense)", headers=form)
    _, _, page = request(port, "/", token=token)
    assert b"unknown filter" in page and session.spec == "conv(sobel_y) -> relu"


@pytest.mark.slow
def test_an_uploaded_image_is_checked_and_run(served, tmp_path):
    """An uploaded image runs with the same checks as the command line; bytes that are no image get a 400."""
    port, token, session = served
    picture = tmp_path / "b.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30), np.uint8)).save(picture)
    status, _, _ = request(port, "/api/image", method="POST", token=token, body=picture.read_bytes(),
                           headers={"X-File-Name": "b.png"})
    assert status == 200
    assert json.loads(request(port, "/run/manifest.json", token=token)[2])["input"]["width"] == 30
    status, _, body = request(port, "/api/image", method="POST", token=token, body=b"not an image",
                              headers={"X-File-Name": "c.png"})
    assert status == 400 and "not an image" in json.loads(body)["error"]


@pytest.mark.slow
def test_uploads_do_not_pile_up(served, tmp_path):
    """Only the upload shown is kept: five good and five bad uploads leave one file in the session's folder."""
    port, token, session = served
    for k in range(5):
        picture = tmp_path / f"{k}.png"
        Image.fromarray(np.full((8 + k, 9), 40 * k, np.uint8)).save(picture)
        for body, status in ((picture.read_bytes(), 200), (b"no image", 400)):
            sent = {"X-File-Name": "x.png"}
            assert request(port, "/api/image", method="POST", token=token, body=body, headers=sent)[0] == status
    assert list(session.folder.glob("upload-*/*")) == [session.image] and session.image.name == "x.png"


@pytest.mark.slow
def test_a_shipped_sample_is_picked_by_name_and_nothing_else(served):
    """The page lists the shipped samples; /api/sample runs one by name, and a path or an unknown name is a 400."""
    from cnnx.base.choices import SAMPLES

    port, token, session = served
    page = request(port, "/", token=token)[2].decode()
    assert "<option>chelsea.png</option>" in page and "<option>stripes.png</option>" in page
    post = {"Content-Type": "application/json"}
    status, _, _ = request(port, "/api/sample", method="POST", token=token, headers=post,
                           body=json.dumps({"name": "stripes.png"}).encode())
    assert status == 200 and session.image == SAMPLES / "stripes.png"
    with Image.open(SAMPLES / "stripes.png") as stripes:
        assert json.loads(request(port, "/run/manifest.json", token=token)[2])["input"]["width"] == stripes.width
    for name in ("../samples/chelsea.png", str(SAMPLES / "chelsea.png"), "nothing.png", ""):
        status, _, body = request(port, "/api/sample", method="POST", token=token, headers=post,
                                  body=json.dumps({"name": name}).encode())
        assert status == 400 and "samples are" in json.loads(body)["error"], name
    assert session.image == SAMPLES / "stripes.png"


@pytest.mark.slow
def test_an_image_dropped_on_the_page_is_run(served, tmp_path, browser):
    """In headless Chromium: a file dropped anywhere on the page is uploaded and the page shows its run."""
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    port, token, session = served
    picture = tmp_path / "dropped.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 70), np.uint8)).save(picture)
    driver = browser
    try:
        _first_map(driver, port, token)
        driver.execute_script(
            """const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
            """,
            base64.b64encode(picture.read_bytes()).decode(),
        )
        WebDriverWait(driver, 20).until(lambda d: "1x40x70" in d.find_element(By.ID, "stage-0").text)
    finally:
        driver.quit()
    assert session.image.name == "dropped.png" and session.image.read_bytes() == picture.read_bytes()


@pytest.mark.slow
def test_a_page_reads_the_run_it_shows_whatever_another_tab_runs(served):
    """Tab A's page names its run; after tab B runs other stages, A's values, files and download are still its
    run's, the newest run is B's, and once A's run is replaced by several newer ones A is told to reload."""
    import re

    from cnnx.app.session import KEPT_RUNS

    port, token, session = served
    page = request(port, "/", token=token)[2].decode()
    number = int(re.search(r'<base href="/run/(\d+)/">', page).group(1))
    first = np.load(session.run / "01_conv" / "stage.npy")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert request(port, "/api/spec", method="POST", token=token, headers=form, body=b"spec=conv(sobel_y)")[0] == 303
    ask = f"/api/value?stage=1&channel=0&row=5&col=7&run={number}"
    assert json.loads(request(port, ask, token=token)[2])["value"] == pytest.approx(float(first[0, 5, 7]))
    newest = json.loads(request(port, "/run/manifest.json", token=token)[2])
    assert newest["stages"][1]["description"] != json.loads(
        request(port, f"/run/{number}/manifest.json", token=token)[2])["stages"][1]["description"]
    assert request(port, f"/api/download?run={number}", token=token)[0] == 200
    for k in range(KEPT_RUNS):
        body = f"spec=conv(sobel_x) -> relu{' -> relu' * k}".encode()
        assert request(port, "/api/spec", method="POST", token=token, headers=form, body=body)[0] == 303
    status, _, body = request(port, ask, token=token)
    assert status == 400 and "reload" in json.loads(body)["error"]
    assert request(port, f"/run/{number}/manifest.json", token=token)[0] == 404
    assert len(list(session.folder.glob("run-*"))) == KEPT_RUNS


@pytest.mark.slow
def test_two_hundred_concurrent_requests_are_answered(served):
    """200 requests at once from 16 threads: every one answered 200, none mixed up."""
    port, token, session = served
    paths = [f"/api/value?stage=1&channel={k % 4}&row={k % 48}&col={k % 64}" for k in range(200)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda path: request(port, path, token=token), paths))
    raw = np.load(session.run / "01_conv" / "stage.npy")
    for k, (status, _, body) in enumerate(answers):
        assert status == 200 and json.loads(body)["value"] == float(raw[k % 4, k % 48, k % 64])


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.slow
def test_a_signal_stops_the_server_cleanly(tmp_path, signum, code):
    """cnnx serve prints its URL; Ctrl-C (or SIGTERM, SIGHUP) stops it with 128 + the signal, no traceback, and
    removes its runs."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(image)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnx", "serve", str(image), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stdout.readline()
    assert "http://127.0.0.1:" in line and "token=" in line
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code and "Traceback" not in stderr, stderr
    assert not list(tmp_path.glob("cnnx-serve-*"))


def _first_map(driver, port, token):
    """Open the page and bring the first conv map into view, once the page's script has read the manifest."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"http://127.0.0.1:{port}/?token={token}")
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stage-1 figure img"))
    tile = driver.find_element(By.CSS_SELECTOR, "#stage-1 figure img")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)
    time.sleep(0.5)
    return tile


@pytest.mark.slow
def test_hovering_a_map_shows_its_value(served, browser):
    """In headless Chromium: the pointer over a map shows the value there, as /api/value gives it."""
    port, token, _ = served
    driver = browser
    try:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        tile = _first_map(driver, port, token)
        ActionChains(driver).move_to_element_with_offset(tile, 1, 1).perform()
        WebDriverWait(driver, 10).until(lambda d: "row" in d.find_element(By.ID, "cnnx-value").text)
        text = driver.find_element(By.ID, "cnnx-value").text
        assert text.startswith("stage 1, map 0") and "input pixels" in text
        Path(os.environ.get("CNNX_ARTIFACTS", "test-artifacts")).mkdir(exist_ok=True)
        driver.save_screenshot(str(Path(os.environ.get("CNNX_ARTIFACTS", "test-artifacts")) / "serve-hover.png"))
    finally:
        driver.quit()


def test_the_arithmetic_behind_a_value_equals_it(served):
    """/api/explain for a conv, a ReLU and a pooled value: the windows, weights and products add to the value."""
    port, token, session = served
    for stage, place in ((1, (0, 10, 13)), (2, (2, 5, 5)), (3, (1, 4, 7)), (4, (3, 6, 6))):
        status, _, body = request(port, f"/api/explain?stage={stage}&channel={place[0]}&row={place[1]}&col={place[2]}",
                                  token=token)
        data = json.loads(body)
        raw = np.load(session.run / sorted(session.run.glob(f"0{stage}_*"))[0].name / "stage.npy")
        assert status == 200 and data["total"] == pytest.approx(float(raw[place]), rel=1e-4, abs=1e-6), stage
    assert request(port, "/api/explain?stage=0&channel=0&row=0&col=0", token=token)[0] == 400


@pytest.mark.slow
def test_clicking_a_map_shows_the_arithmetic(served, browser):
    """In headless Chromium: a click on a conv map shows its window, weights and products, and the value."""
    port, token, session = served
    driver = browser
    try:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        tile = _first_map(driver, port, token)
        ActionChains(driver).move_to_element(tile).click().perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        panel = driver.find_element(By.ID, "cnnx-explain").text
        assert "window" in panel and "weights" in panel and "products" in panel
        raw = np.load(session.run / "01_conv" / "stage.npy")
        shown = float(driver.find_element(By.ID, "cnnx-total").text.split("=")[-1])
        assert any(abs(shown - value) <= 1e-4 * max(1, abs(value)) for value in raw[0].ravel())
        driver.find_element(By.ID, "cnnx-close").click()
        assert driver.find_element(By.ID, "cnnx-explain").text == ""
    finally:
        driver.quit()


@pytest.mark.slow
def test_the_download_is_the_folder_cnnx_pipeline_writes(served, tmp_path):
    """The zip holds the files `cnnx pipeline --save-raw` writes for the same image and stages, pixel for pixel."""
    import io
    import zipfile

    from typer.testing import CliRunner

    from cnnx.app.cli import app

    port, token, session = served
    status, headers, body = request(port, "/api/download", token=token)
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert 'filename="a_cnnx.zip"' in headers["Content-Disposition"]
    folder = tmp_path / "by-command"
    result = CliRunner().invoke(app, ["pipeline", str(session.image), "-o", str(folder), "--save-raw"])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == [f"a_cnnx/{name}" for name in written]
        for name in written:
            if name.endswith(".png"):
                shipped = np.asarray(Image.open(io.BytesIO(archive.read(f"a_cnnx/{name}"))))
                assert np.array_equal(shipped, np.asarray(Image.open(folder / name))), name


@pytest.mark.slow
def test_serve_with_no_image_shows_the_shipped_sample(tmp_path):
    """With no image, from any folder, cnnx serve runs the sample shipped inside the package."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnx", "serve", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        url = process.stdout.readline().split()[3]
        port, token = int(url.split(":")[2].split("/")[0]), url.partition("token=")[2]
        manifest = json.loads(request(port, "/run/manifest.json", token=token)[2])
        with Image.open(Path(__file__).parents[1] / "samples" / "chelsea.png") as sample:
            assert (manifest["input"]["width"], manifest["input"]["height"]) == sample.size
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 130


@pytest.mark.parametrize("model", ["shapes", "blocks.onnx", "families-any-size-torch.export.onnx"])
@pytest.mark.slow
def test_every_value_of_a_model_is_explained_as_it_was_stored(tmp_path, model):
    """For the shipped model and ONNX networks (the newer families' blocks too, exported for any size and run at
    the photo's): every stage's explained value is the stored one, a conv value is a sum over every input channel
    of the stage before, and every op of the network has its arithmetic shown."""
    pytest.importorskip("onnx")
    from onnx_models import block_model

    if model == "blocks.onnx":
        model = str(block_model(tmp_path / model))
    elif model.endswith(".onnx"):
        model = str(Path(__file__).parent / "goldens" / model)
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 40, 3), np.uint8)).save(image)
    onnx = {"layers": "all", "preprocess": "imagenet"} if model.endswith(".onnx") else {}
    session = Session(image, lambda text: source_from(None, None, None, model, None, None, **onnx), Style(),
                      folder=tmp_path / "session")
    session.recompute()
    assert session.run is not None, session.error
    entries = json.loads((session.run / "manifest.json").read_text())["stages"]
    explained, ops = 0, set()
    for stage in range(1, len(entries)):
        raw = np.load(session.run / entries[stage]["raw"])
        place = tuple(k // 2 for k in raw.shape)
        data = session.explain(stage, *place)
        assert data["total"] == pytest.approx(float(raw[place]), rel=1e-4, abs=1e-5), entries[stage]["description"]
        if model.endswith(".onnx"):  # every op of these blocks has its arithmetic shown
            assert "as computed" not in data["rule"], data["rule"]
            ops.add(entries[stage]["operation"])
        if entries[stage]["operation"] == "conv":
            if hasattr(session.source, "chosen"):  # a graph: a conv's input need not be the stage before
                node = session.source.chosen()[stage - 1]
                channels = session.source.constants[node.inputs[1]].shape[1]  # per group
            else:
                channels = np.load(session.run / entries[stage - 1]["raw"]).shape[0]
            assert len(data["parts"]) == channels and "as computed" not in data["rule"]
            explained += 1
    assert explained >= 2
    assert "blocks" not in model or {"add", "concat", "maxpool", "gemm", "softmax", "relu", "mul"} <= ops
    assert "families" not in model or {"gelu", "layernormalization", "matmul", "hardswish"} <= ops


@pytest.mark.parametrize("model", ["shapes", "blocks.onnx"])
def test_a_model_run_is_drawn_again_with_its_answer(tmp_path, model):
    """For the shipped model and an ONNX network, a colour change draws the same stages and the same answer."""
    pytest.importorskip("onnx")
    from onnx_models import block_model

    if model.endswith(".onnx"):
        model = str(block_model(tmp_path / model))
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (40, 40, 3), np.uint8)).save(image)
    session = Session(image, lambda text: source_from(None, None, None, model, None, None), Style(),
                      folder=tmp_path / "session")
    session.recompute()
    before = json.loads((session.run / "manifest.json").read_text())
    session.set_style({"stretch": "linear", "cmap": "viridis"})
    after = json.loads((session.run / "manifest.json").read_text())
    assert after["model"]["answer"] == before["model"]["answer"] and after["drawing"]["cmap"] == "viridis"
    assert [s["stats"] for s in after["stages"]] == [s["stats"] for s in before["stages"]]
    assert {s["stretch"] for s in after["stages"]} == {"linear"}


def _stroke(driver, canvas, points) -> None:
    """One pen stroke through ``points`` (offsets from the canvas's centre), pressed down and lifted."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver).move_to_element_with_offset(canvas, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        chain = chain.move_by_offset(x1 - x0, y1 - y0)
    chain.release().perform()


@pytest.mark.parametrize(("shape", "strokes"), [
    ("circle", [[(round(55 * np.cos(t)), round(55 * np.sin(t))) for t in np.linspace(0, 2 * np.pi, 33)]]),
    ("cross", [[(-55, -55), (55, 55)], [(55, -55), (-55, 55)]]),
])
@pytest.mark.slow
def test_drawing_a_shape_for_the_model_changes_its_answer(tmp_path, shape, strokes, browser):
    """In headless Chromium, with the shipped model: shapes drawn on the page's canvas are what the model runs on,
    and it names them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    image = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(image)
    session = Session(image, lambda text: source_from(None, None, None, "shapes", None, None), Style(),
                      folder=tmp_path / "session")
    session.recompute()
    server, url = make_server(session)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = browser
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/?token={url.partition('token=')[2]}")
        canvas = WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "cnnx-canvas"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        for count, points in enumerate(strokes, 1):
            driver.execute_script("window.cnnxBefore = true")
            _stroke(driver, driver.find_element(By.ID, "cnnx-canvas"), points)
            reloaded = "return document.readyState === 'complete' && window.cnnxBefore === undefined"
            WebDriverWait(driver, 20).until(lambda d, reloaded=reloaded: d.execute_script(reloaded))
            WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "cnnx-canvas"))
            assert session.image != image and session.count == count + 1
        drawn = np.asarray(Image.open(session.image).convert("L"))
        assert drawn.shape == (192, 192) and (drawn < 128).mean() > 0.02 and drawn[0, 0] > 200  # ink on white
        manifest = json.loads((session.run / "manifest.json").read_text())
        answer = manifest["model"]["answer"]
        assert max(answer, key=answer.get) == shape
        shown = WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "cnnx-answer")).text
        assert shown.startswith(shape)
        Path(os.environ.get("CNNX_ARTIFACTS", "test-artifacts")).mkdir(exist_ok=True)
        driver.save_screenshot(str(Path(os.environ.get("CNNX_ARTIFACTS", "test-artifacts")) / f"serve-{shape}.png"))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_filter_edited_as_numbers_is_what_the_conv_computes(served):
    """/api/filters gives the chain's kernels; a grid posted to /api/filter becomes that filter, and the map is
    the input correlated with it (scipy, edges replicated as the lesson's conv pads); bad grids get a 400."""
    from scipy.ndimage import correlate

    port, token, session = served
    listed = json.loads(request(port, "/api/filters", token=token)[2])
    assert listed["filters"][0]["weights"] == [[1, 0, -1], [1, 0, -1], [1, 0, -1]]  # the lesson's vertical edge
    assert listed["bank"]["sobel_x"] == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    laplacian = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    post = {"Content-Type": "application/json"}
    status, _, _ = request(port, "/api/filter", method="POST", token=token, headers=post,
                           body=json.dumps({"stage": 1, "index": 0, "weights": laplacian}).encode())
    assert status == 200
    image = np.load(session.run / "00_input" / "stage.npy")[0].astype(np.float64)
    conv = np.load(session.run / "01_conv" / "stage.npy")
    assert np.allclose(conv[0], correlate(image, np.array(laplacian, float), mode="nearest"), atol=1e-5)
    spec = session.spec
    for bad in ({"stage": 1, "index": 0, "weights": [[1, 2], [3]]}, {"stage": 1, "index": 0, "weights": [[None]]},
                {"stage": 2, "index": 0, "weights": [[1]]}, {"stage": 1, "index": 9, "weights": [[1]]},
                {"stage": 1, "weights": [[1]]}):
        status, _, body = request(port, "/api/filter", method="POST", token=token, headers=post,
                                  body=json.dumps(bad).encode())
        assert status == 400 and "\n" not in json.loads(body)["error"], bad
    assert session.spec == spec


@pytest.mark.slow
def test_picking_a_bank_filter_in_the_page_recomputes_the_maps(served, browser):
    """In headless Chromium: open the filter editor, take sobel_y's numbers from the bank, apply; the first conv map
    is now the input correlated with sobel_y."""
    from scipy.ndimage import correlate
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait
    port, token, session = served
    driver = browser
    try:
        driver.get(f"http://127.0.0.1:{port}/?token={token}")
        shown = "#cnnx-filters:not([hidden])"
        editor = WebDriverWait(driver, 20).until(lambda d: d.find_element(By.CSS_SELECTOR, shown))
        editor.find_element(By.TAG_NAME, "summary").click()
        Select(driver.find_element(By.ID, "cnnx-bank")).select_by_value("sobel_y")
        cells = driver.find_elements(By.CSS_SELECTOR, "#cnnx-grid input")
        assert [float(c.get_attribute("value")) for c in cells] == [-1, -2, -1, 0, 0, 0, 1, 2, 1]
        driver.execute_script("window.cnnxBefore = true")
        driver.find_element(By.ID, "cnnx-apply").click()
        reloaded = "return document.readyState === 'complete' && window.cnnxBefore === undefined"
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(reloaded))  # after the server's answer
    finally:
        driver.quit()
    image = np.load(session.run / "00_input" / "stage.npy")[0].astype(np.float64)
    conv = np.load(session.run / "01_conv" / "stage.npy")
    sobel_y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float)
    assert np.allclose(conv[0], correlate(image, sobel_y, mode="nearest"), atol=1e-5)


@pytest.mark.slow
def test_the_colours_change_and_a_bad_choice_keeps_them(served):
    """/api/style redraws the run: with the gray map the tiles are grey; an unknown scope or key gets a 400."""
    port, token, session = served
    post = {"Content-Type": "application/json"}
    status, _, _ = request(port, "/api/style", method="POST", token=token, headers=post,
                           body=json.dumps({"cmap": "gray", "normalize": "minmax"}).encode())
    assert status == 200
    manifest = json.loads(request(port, "/run/manifest.json", token=token)[2])
    assert manifest["drawing"]["cmap"] == "gray" and manifest["drawing"]["normalize"] == "minmax"
    tile = manifest["stages"][1]["maps"][0]["tile"]
    pixels = np.asarray(Image.open(session.run / tile).convert("RGB")).astype(int)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and pixels.min() == 0 and pixels.max() == 255  # minmax
    for bad in ({"scope": "everywhere"}, {"colour": "red"}, {"cmap": "no-such-map"}):
        status, _, body = request(port, "/api/style", method="POST", token=token, headers=post,
                                  body=json.dumps(bad).encode())
        assert status == 400 and "\n" not in json.loads(body)["error"], bad
    assert session.style.cmap == "gray" and session.style.scope == "block"
    page = request(port, "/", token=token)[2].decode()
    assert "<option selected>gray</option>" in page and "<option selected>minmax</option>" in page


@pytest.mark.slow
def test_a_style_change_redraws_without_computing_and_matches_the_command(served, tmp_path, monkeypatch):
    """Switching the stretch, scope and colour map draws the saved arrays again (no stage is computed) into the
    files `cnnx pipeline --save-raw` writes with those options, pixel for pixel, manifest for manifest."""
    from typer.testing import CliRunner

    from cnnx.app.cli import app

    port, token, session = served
    computed = []
    original = type(session.source).stream
    monkeypatch.setattr(type(session.source), "stream", lambda *a, **k: computed.append(1) or original(*a, **k))
    choices = {"stretch": "linear", "scope": "map", "cmap": "viridis"}
    status, _, body = request(port, "/api/style", method="POST", token=token,
                              headers={"Content-Type": "application/json"}, body=json.dumps(choices).encode())
    assert status == 200, body
    assert not computed
    folder = tmp_path / "by-command"
    options = [f"--{key}={value}" for key, value in choices.items()]
    result = CliRunner().invoke(app, ["pipeline", str(session.image), "-o", str(folder), "--save-raw", *options])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(p.relative_to(session.run).as_posix() for p in session.run.rglob("*") if p.is_file()) == written
    assert (session.run / "manifest.json").read_text() == (folder / "manifest.json").read_text()
    for name in written:
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(session.run / name)), np.asarray(Image.open(folder / name)))


@pytest.mark.slow
def test_memory_and_disk_stay_bounded_over_a_thousand_recomputes(tmp_path):
    """1,000 edits, alternating two specs: the memory Python holds does not grow with them, and only the runs
    kept for the page stay on disk."""
    import gc
    import tracemalloc

    from cnnx.app.session import KEPT_RUNS

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24), np.uint8)).save(image)
    session = Session(image, lambda text: source_from(text, None, None, None, None, None), Style(),
                      folder=tmp_path / "runs")
    specs = ("relu", "maxpool(2)")
    for k in range(100):  # caches and free lists settle
        session.recompute(spec=specs[k % 2])
    held = []  # the memory Python holds after 0, 500 and 1,000 more
    tracemalloc.start()
    try:
        for k in range(1001):
            if k % 500 == 0:
                gc.collect()
                held.append(tracemalloc.get_traced_memory()[0])
            session.recompute(spec=specs[k % 2])
    finally:
        tracemalloc.stop()
    assert not session.error and session.count == 1101
    # A leak of a path per run (what this caught) is ~300 bytes a run: 150 kB a window.
    assert held[2] - held[1] < 40_000, f"{held}: growing with every recompute"
    assert len(list(session.folder.iterdir())) <= KEPT_RUNS


def test_the_pages_links_hints_errors_and_pool_windows_read_right(served, browser):
    """In headless Chromium: a stage link scrolls the page (no JSON error from the run's folder); the hint says
    a click shows the arithmetic; a pooled value's window ends in "=", not "sum"; a bad spec's caret stands under
    its fault, and the typed text stays."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    port, token, session = served
    driver = browser
    try:
        _first_map(driver, port, token)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.find_element(By.CSS_SELECTOR, 'nav a[href="#stage-3"]').click()
        WebDriverWait(driver, 5).until(lambda d: d.execute_script("return window.scrollY") > 100)
        assert "no such file" not in driver.find_element(By.TAG_NAME, "body").text
        assert "click it to see how it was computed" in driver.find_element(By.ID, "click-hint").text
        pooled = next(img for img in driver.find_elements(By.CSS_SELECTOR, "#stage-3 figure img"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", pooled)
        ActionChains(driver).move_to_element(pooled).click().perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        panel = driver.find_element(By.ID, "cnnx-explain").text
        assert "largest" in panel and "sum" not in panel
        driver.execute_script("window.scrollTo(0, 0)")
        box = driver.find_element(By.ID, "cnnx-spec")
        box.clear()
        box.send_keys("conv(sobel_x) -> reluu")
        driver.find_element(By.CSS_SELECTOR, "#cnnx-form button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: "reluu" in d.find_element(By.ID, "cnnx-error").text)
        lines = driver.find_element(By.ID, "cnnx-error").text.splitlines()
        code, caret = next(line for line in lines if "reluu" in line and "->" in line), lines[-1]
        assert caret.strip() == "^" and caret.index("^") == code.index("reluu")
        assert box.get_attribute("value") == "conv(sobel_x) -> reluu"
    finally:
        driver.quit()


@pytest.mark.parametrize("width", [1400, 700])
def test_the_arithmetic_panel_never_covers_the_map_clicked(served, browser, width):
    """In headless Chromium at 1400 and 700 px: the clicked value's arithmetic opens beside the maps (wide) or
    under them (narrow), the page makes room, and the map clicked stays in view, clear of the panel and the bar."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    port, token, session = served
    driver = browser
    try:
        driver.set_window_size(width, 900)
        tile = _first_map(driver, port, token)
        ActionChains(driver).move_to_element(tile).click().perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        time.sleep(0.3)
        boxes = driver.execute_script(
            "const r = e => e.getBoundingClientRect(); const m = r(arguments[0]);"
            "const p = r(document.getElementById('cnnx-explain')); const b = r(document.getElementById('cnnx-live'));"
            "return [[m.left, m.top, m.right, m.bottom], [p.left, p.top, p.right, p.bottom], b.bottom,"
            " window.innerHeight]", tile)
        (ml, mt, mr, mb), (pl, pt, pr, pb), bar, height = boxes
        assert mr <= pl or ml >= pr or mb <= pt or mt >= pb, boxes  # no overlap with the panel
        assert mt >= bar - 1 and mb <= height + 1, boxes  # in view, below the bar
        driver.find_element(By.ID, "cnnx-close").click()
        assert "cnnx-panel" not in driver.find_element(By.TAG_NAME, "body").get_attribute("class")
    finally:
        driver.quit()


def _serious_violations(driver) -> list[str]:
    """axe-core's serious and critical findings on the page as it stands."""
    from axe_selenium_python import Axe

    axe = Axe(driver)
    axe.inject()
    return [f"{v['impact']} {v['id']}: {v['help']} {[(n['target'], n['failureSummary'][:300]) for n in v['nodes']]}"
            for v in axe.run()["violations"] if v["impact"] in ("serious", "critical")]


def test_the_page_passes_axe_core_in_every_state(tmp_path, browser):
    """axe-core finds no serious or critical accessibility violation on the first view, a stage opened from the
    flow, a clicked value's arithmetic (its heat-map cells' text black or white, whichever stands out), the
    lesson's worked window, an error, and a model's page with its drawing pad and why controls."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)).save(image)
    driver = browser
    try:
        for model in (None, "shapes"):
            session = Session(image, lambda text, model=model: source_from(text, None, None, model, None, None),
                              Style(), folder=tmp_path / f"session-{model}")
            session.recompute()
            server, url = make_server(session)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                driver.get(url)
                WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stage-1 figure img"))
                assert _serious_violations(driver) == [], "first view"
                step = driver.find_element(By.CSS_SELECTOR, 'header .flow a[href="#stage-1"]')
                driver.execute_script("arguments[0].click()", step)  # wherever axe left the page scrolled
                WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-stage-view"))
                assert _serious_violations(driver) == [], "a stage opened from the flow"
                driver.execute_script("document.getElementById('cnnx-stage-close').click()")
                tile = driver.find_element(By.CSS_SELECTOR, "#stage-1 figure img")
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)
                ActionChains(driver).move_to_element(tile).click().perform()
                WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
                assert _serious_violations(driver) == [], "a clicked value"
                driver.find_element(By.ID, "cnnx-lesson").click()
                WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "cnnx-lesson-next"))
                driver.find_element(By.ID, "cnnx-lesson-next").click()
                WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "cnnx-lesson-window").text)
                assert _serious_violations(driver) == [], "the lesson"
                driver.find_element(By.ID, "cnnx-close").click()
                if model is None:
                    box = driver.find_element(By.ID, "cnnx-spec")
                    box.clear()
                    box.send_keys("conv(x) -> reluu")
                    driver.find_element(By.CSS_SELECTOR, "#cnnx-form button[type=submit]").click()
                    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "cnnx-error").text)
                    assert _serious_violations(driver) == [], "an error"
            finally:
                server.shutdown()
                server.server_close()
                session.close()
    finally:
        driver.quit()


def test_the_keyboard_reads_values_and_explains_one(served, browser):
    """Tab reaches a map; the arrows move a cursor over its values (Shift: ten at a time), each read out; Enter
    shows how the value under the cursor was computed, as a click does; pushed past a map's edge the cursor goes
    on into the next map (or back into the one before), at the same row."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    port, token, session = served
    driver = browser
    try:
        tile = _first_map(driver, port, token)
        assert tile.get_attribute("tabindex") == "0" and "arrow keys" in tile.get_attribute("aria-label")
        driver.execute_script("arguments[0].focus()", tile)
        value = driver.find_element(By.ID, "cnnx-value")
        WebDriverWait(driver, 10).until(lambda d: "row 24, column 32" in value.text)  # the middle of 48x64
        tile.send_keys(Keys.ARROW_RIGHT)
        WebDriverWait(driver, 10).until(lambda d: "row 24, column 33" in value.text)
        tile.send_keys(Keys.SHIFT, Keys.ARROW_UP)
        WebDriverWait(driver, 10).until(lambda d: "row 14, column 33" in value.text)
        raw = np.load(session.run / "01_conv" / "stage.npy")
        tile.send_keys(Keys.ENTER)
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        assert "row 14, column 33" in driver.find_element(By.ID, "cnnx-explain").text
        shown = float(driver.find_element(By.ID, "cnnx-total").text.split("=")[-1])
        assert shown == pytest.approx(float(raw[0, 14, 33]), rel=1e-4, abs=1e-6)
        driver.find_element(By.ID, "cnnx-close").click()
        driver.execute_script("arguments[0].focus()", tile)
        for _ in range(4):  # to the last column, then past it
            driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.ARROW_RIGHT)
        WebDriverWait(driver, 10).until(lambda d: "map 1" in value.text and "row 14, column 0" in value.text)
        maps = driver.find_elements(By.CSS_SELECTOR, "figure img[tabindex]")
        assert driver.switch_to.active_element == maps[maps.index(tile) + 1]
        driver.switch_to.active_element.send_keys(Keys.ARROW_LEFT)  # and back, at the last column
        WebDriverWait(driver, 10).until(lambda d: "map 0" in value.text and "row 14, column 63" in value.text)
        assert driver.switch_to.active_element == tile
    finally:
        driver.quit()


def _files(folder: Path) -> set:
    return {(p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_camera_frame_runs_in_memory_and_writes_nothing(served):
    """A frame posted to /api/frame comes back as each stage's shape and first maps (PNG data), the lesson's shapes
    for 256x256 worked by hand; the input's tile shows the frame (dark left, light right); no file is written."""
    import base64
    import io

    port, token, session = served
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[:, 128:] = 230
    sent = io.BytesIO()
    Image.fromarray(frame).save(sent, format="JPEG", quality=92)
    before = _files(session.folder)
    status, _, body = request(port, "/api/frame", method="POST", token=token, body=sent.getvalue(),
                              headers={"Content-Type": "image/jpeg"})
    assert status == 200, body
    data = json.loads(body)
    assert [stage["shape"] for stage in data["stages"]] == [
        "1x256x256", "4x256x256", "4x256x256", "4x128x128", "4x128x128", "4x128x128", "4x64x64"]
    assert [len(stage["tiles"]) for stage in data["stages"]] == [1, 4, 4, 4, 4, 4, 4]
    tile = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["stages"][0]["tiles"][0].partition(",")[2]))))
    grey = tile if tile.ndim == 2 else tile[..., 0]
    assert grey[:, : grey.shape[1] // 3].max() < 40 and grey[:, -grey.shape[1] // 3 :].min() > 200
    assert _files(session.folder) == before and data["answer"] == []


@pytest.mark.parametrize("case", ["not an image", "too large"])
def test_a_bad_camera_frame_is_one_line_and_changes_nothing(served, case):
    import io

    port, token, session = served
    body = b"not a picture"
    if case == "too large":
        sent = io.BytesIO()
        Image.new("L", (1100, 1000)).save(sent, format="PNG")
        body = sent.getvalue()
    before = _files(session.folder)
    status, _, answer = request(port, "/api/frame", method="POST", token=token, body=body)
    error = json.loads(answer)["error"]
    assert status == 400 and "\n" not in error and "camera frame" in error
    assert _files(session.folder) == before


def test_the_camera_streams_through_the_stages_and_a_frame_can_be_run(served, camera_browser):
    """In headless Chromium with its synthetic camera: the camera button streams frames through the stages (the
    flow of their maps drawn, a rate said), and "run this frame" makes the frame the page's image."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    port, token, session = served
    driver = camera_browser
    try:
        _first_map(driver, port, token)
        driver.find_element(By.ID, "cnnx-camera-start").click()
        WebDriverWait(driver, 30).until(
            lambda d: int(d.find_element(By.ID, "cnnx-camera").get_attribute("data-frames") or 0) >= 5)
        # The flow is drawn again with every frame: read it by script, in one go.
        steps = driver.execute_script(
            "return Array.from(document.querySelectorAll('#cnnx-camera-flow li')).map(li => li.textContent)")
        assert len(steps) == 7 and "4x64x64" in steps[-1]
        assert "frames a second" in driver.find_element(By.ID, "cnnx-camera-rate").text
        save = driver.find_element(By.ID, "cnnx-camera-save")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", save)
        save.click()
        # The page reloads: read it by script, so an element of the page before is never asked for its text.
        WebDriverWait(driver, 30).until(lambda d: "1x256x256" in d.execute_script(
            "const card = document.getElementById('stage-0'); return card ? card.textContent : ''"))
    finally:
        driver.quit()
    assert session.image.name == "camera.png"


def test_the_stage_editor_moves_removes_and_adds_stages_and_keeps_a_bad_edit(served, browser):
    """In headless Chromium: the stage list shows the spec's stages; a stage moved by the keyboard keeps the
    focus; a stage removed, a pool and a conv with a bank filter picked by its picture added, and run: the page
    shows those stages.  A stage that cannot be read is said, and the list keeps the text typed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    port, token, session = served
    driver = browser

    def texts():
        return [i.get_attribute("value") for i in driver.find_elements(By.CSS_SELECTOR, "#cnnx-stage-list input")]

    try:
        _first_map(driver, port, token)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.find_element(By.CSS_SELECTOR, "#cnnx-stages summary").click()
        first = texts()
        assert len(first) == 6 and first[1] == "relu" and first[2] == "maxpool(2)"
        down = driver.find_element(By.CSS_SELECTOR, 'button[aria-label="move stage 2 down"]')
        down.send_keys(Keys.ENTER)
        assert texts()[1:3] == ["maxpool(2)", "relu"]
        assert driver.switch_to.active_element.get_attribute("aria-label") == "move stage 3 down"
        driver.find_element(By.CSS_SELECTOR, 'button[aria-label="remove stage 6"]').click()
        kind = driver.find_element(By.ID, "cnnx-add-kind")
        kind.send_keys("avgpool")
        driver.find_element(By.ID, "cnnx-add").click()
        kind.send_keys("conv")
        driver.find_element(By.CSS_SELECTOR, '#cnnx-bank-picker button[title="sobel_x"]').click()
        driver.find_element(By.ID, "cnnx-add").click()
        wanted = [first[0], "maxpool(2)", "relu", first[3], first[4], "avgpool(2)", "conv(sobel_x)"]
        assert texts() == wanted
        driver.find_element(By.ID, "cnnx-run-stages").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "stage-7"))
        assert "conv(sobel_x)" in driver.find_element(By.ID, "stage-7").text
        assert session.spec == " -> ".join(wanted)
        driver.find_element(By.CSS_SELECTOR, "#cnnx-stages summary").click()
        last = driver.find_elements(By.CSS_SELECTOR, "#cnnx-stage-list input")[-1]
        last.clear()
        last.send_keys("maxpool(0)")
        driver.find_element(By.ID, "cnnx-run-stages").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "cnnx-error").text)
        assert texts()[-1] == "maxpool(0)" and session.spec == " -> ".join(wanted)
    finally:
        driver.quit()


def test_the_lesson_walks_its_six_steps_pointing_at_the_live_stages(served, browser):
    """In headless Chromium: "the lesson" opens its first step in the panel; next walks the six, each outlining
    its stage's card; the convolution step works out the window its text names, to the stored value."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    port, token, session = served
    driver = browser
    try:
        _first_map(driver, port, token)
        driver.find_element(By.ID, "cnnx-lesson").click()
        titles, pointed = [], []
        for k in range(6):
            WebDriverWait(driver, 20).until(lambda d, k=k: f"step {k + 1} of 6" in d.find_element(
                By.ID, "cnnx-explain").text)
            titles.append(driver.find_element(By.CSS_SELECTOR, "#cnnx-explain b").text)
            pointed.append([e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, ".cnnx-pointed")])
            if k == 1:
                WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "cnnx-lesson-window").text)
                worked = driver.find_element(By.ID, "cnnx-lesson-window").text
                window = json.loads(request(port, "/api/lesson", token=token)[2])["steps"][1]["window"]
                value = json.loads(request(port, f"/api/value?stage=1&channel=0&row={window['row']}&col="
                                                 f"{window['col']}", token=token)[2])["value"]
                assert f"row {window['row']}, column {window['col']}" in worked
                assert worked.endswith(f"{value:.6g}") or f"{value:.6g}" in worked
            if k < 5:
                driver.find_element(By.ID, "cnnx-lesson-next").click()
        assert [t.split(".")[0] for t in titles] == list("123456")
        assert pointed[:5] == [["stage-0"], ["stage-1"], ["stage-2"], ["stage-3"], ["stage-6"]] and pointed[5] == []
        assert driver.find_element(By.ID, "cnnx-lesson-next").get_attribute("disabled")
    finally:
        driver.quit()


@contextlib.contextmanager
def _photo_served(tmp_path, model):
    """A server for the sample photo at 512x512 and the lesson's stages (or ``model``): its session and address."""
    from cnnx.base.choices import SAMPLE

    image = tmp_path / "photo.png"
    with Image.open(SAMPLE) as sample:
        sample.convert("RGB").resize((512, 512)).save(image)
    session = Session(image, lambda text: source_from(text, None, None, model, None, None), Style(),
                      folder=tmp_path / "session")
    session.recompute()
    server, url = make_server(session)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield session, url
    finally:
        server.shutdown()
        server.server_close()
        session.close()


@pytest.mark.parametrize("model", [None, "shapes"])
def test_the_whole_network_is_on_the_served_pages_first_screen(tmp_path, model, browser):
    """At 1400x900, below the toolbar: every step of the flow (the input, each stage, the shapes model's answer)
    lies within the first screen, for the lesson's stages on a 512x512 photo and for the shapes model."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver = browser
    with _photo_served(tmp_path, model) as (session, url):
        try:
            driver.set_window_size(1400, 900)
            driver.get(url)
            WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flow a"))
            steps = driver.execute_script("return Array.from(document.querySelectorAll('header .flow a')).map(a => "
                                          "[a.textContent, a.getBoundingClientRect().bottom, a.getBoundingClientRect()"
                                          ".right]).concat([[null, window.innerHeight, window.innerWidth]])")
            *steps, (_, height, width) = steps
            assert len(steps) == len(json.loads((session.run / "manifest.json").read_text())["stages"]) + bool(model)
            assert all(bottom <= height and right <= width for _, bottom, right in steps), steps
        finally:
            driver.quit()


@pytest.mark.parametrize("width", [1400, 700])
def test_a_step_of_the_flow_opens_its_stage_under_the_flow(tmp_path, width, browser):
    """A click on a step of the flow (a stage's name or one of its small maps) opens that stage's card right under
    the flow, now one strip, in sight with the step clicked (not under the bar) and its top in the upper two thirds
    of the window: its maps large, its numbers, story and receptive field. Another step swaps it; closing puts the
    card back in its place in the list, and an edit's reload opens the same stage again. At 1400 and 700 px, for
    the lesson's stages on a 512x512 photo."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver = browser
    geometry = ("const box = e => e.getBoundingClientRect(), view = document.getElementById('cnnx-stage-view');"
                "const step = document.querySelector('header .flow a[aria-current]');"
                "return view && {card: view.querySelector('.stage').id, step: step.getAttribute('href'),"
                "stepBottom: box(step).bottom, stepTop: box(step).top, viewTop: box(view).top,"
                "flowBottom: box(document.querySelector('header .flow')).bottom,"
                "bar: box(document.getElementById('cnnx-live')).bottom, height: window.innerHeight,"
                "maps: view.querySelectorAll('.maps figure img').length, mapWidth: box(view.querySelector("
                "'.maps figure img')).width, field: !!view.querySelector('.field svg'),"
                "facts: view.querySelector('table.facts').textContent, story: view.querySelector('.story').textContent,"
                "list: Array.from(document.querySelectorAll('main > section.stage')).map(s => s.id),"
                "focused: document.activeElement.id}")
    with _photo_served(tmp_path, None) as (session, url):
        try:
            driver.set_window_size(width, 900)
            driver.get(url)
            WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "header .flow a"))
            stages = len(json.loads((session.run / "manifest.json").read_text())["stages"])
            driver.find_element(By.CSS_SELECTOR, 'header .flow a[href="#stage-2"] .thumbs img').click()
            seen = WebDriverWait(driver, 10).until(lambda d: d.execute_script(geometry))
            assert seen["card"] == "stage-2" and seen["step"] == "#stage-2" and seen["focused"] == "stage-2"
            assert seen["bar"] - 1 <= seen["stepTop"] and seen["stepBottom"] <= seen["viewTop"], seen
            assert seen["flowBottom"] <= seen["viewTop"] + 1 and seen["viewTop"] <= 2 / 3 * seen["height"], seen
            assert seen["maps"] >= 1 and seen["mapWidth"] >= 200 and seen["field"], seen
            assert "receptive field" in seen["facts"] and seen["story"]
            assert seen["list"] == [f"stage-{k}" for k in range(stages) if k != 2]
            driver.find_element(By.CSS_SELECTOR, 'header .flow a[href="#stage-4"] b').click()
            seen = WebDriverWait(driver, 10).until(lambda d: d.execute_script(geometry)["card"] == "stage-4"
                                                   and d.execute_script(geometry))
            assert seen["list"] == [f"stage-{k}" for k in range(stages) if k != 4]
            assert len(driver.find_elements(By.CSS_SELECTOR, "header .flow a[aria-current]")) == 1
            driver.refresh()  # as an edit reloads the page
            seen = WebDriverWait(driver, 20).until(lambda d: d.execute_script(geometry))
            assert seen["card"] == "stage-4" and seen["step"] == "#stage-4"
            driver.find_element(By.ID, "cnnx-stage-close").click()
            assert driver.execute_script(geometry) is None
            assert driver.execute_script("return Array.from(document.querySelectorAll('main > section.stage'))"
                                         ".map(s => s.id)") == [f"stage-{k}" for k in range(stages)]
            assert driver.execute_script("return document.activeElement.getAttribute('href')") == "#stage-4"
        finally:
            driver.quit()


@pytest.mark.parametrize("width", [1400, 700])
def test_every_state_of_the_page_reads_at_1400_and_700_px(tmp_path, width, camera_browser):
    """Screenshots of the first view, a clicked value, the structured editor, the lesson and the camera (Chromium's
    synthetic stream), at 1400 and 700 px (kept in test-artifacts/): in each the page never scrolls sideways, and
    what the state opened lies within the window, beside or under the bar rather than behind it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver = camera_browser
    artifacts = Path(os.environ.get("CNNX_ARTIFACTS", "test-artifacts"))
    artifacts.mkdir(exist_ok=True)
    seen = ("const shown = document.querySelector(arguments[0]), box = shown.getBoundingClientRect();"
            "const live = document.getElementById('cnnx-live'), bar = live.getBoundingClientRect();"
            "const fixed = getComputedStyle(shown).position === 'fixed' || live.contains(shown);"
            "return {sideways: document.documentElement.scrollWidth - window.innerWidth, left: box.left,"
            "right: box.right, top: box.top, height: box.height, width: window.innerWidth, tall: window.innerHeight,"
            "under: fixed || box.top >= bar.bottom - 1 || bar.bottom <= 0 || box.bottom <= bar.top};")

    def check(state: str, selector: str) -> None:
        driver.save_screenshot(str(artifacts / f"serve-{state}-{width}.png"))
        at = driver.execute_script(seen, selector)
        assert at["sideways"] <= 1, (state, at)
        assert at["height"] > 0 and at["left"] >= -1 and at["right"] <= at["width"] + 1, (state, at)
        assert at["top"] < at["tall"] and at["under"], (state, at)

    with _photo_served(tmp_path, None) as (_, url):
        driver.set_window_size(width, 900)
        driver.get(url)
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stage-1 figure img"))
        time.sleep(0.5)  # the page's script has read the manifest
        check("first", "header .flow")
        tile = driver.find_element(By.CSS_SELECTOR, "#stage-1 figure img")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)
        ActionChains(driver).move_to_element(tile).click().perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "cnnx-total"))
        check("click", "#cnnx-explain")
        driver.find_element(By.ID, "cnnx-close").click()
        driver.execute_script("window.scrollTo(0, 0)")
        driver.find_element(By.CSS_SELECTOR, "#cnnx-stages summary").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cnnx-stage-list li"))
        check("editor", "#cnnx-stage-list")
        driver.find_element(By.CSS_SELECTOR, "#cnnx-stages summary").click()
        driver.find_element(By.ID, "cnnx-lesson").click()
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "cnnx-lesson-next"))
        driver.find_element(By.ID, "cnnx-lesson-next").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "cnnx-lesson-window").text)
        check("lesson", "#cnnx-explain")
        driver.find_element(By.ID, "cnnx-close").click()
        driver.execute_script("window.scrollTo(0, 0)")
        driver.find_element(By.ID, "cnnx-camera-start").click()
        WebDriverWait(driver, 30).until(
            lambda d: int(d.find_element(By.ID, "cnnx-camera").get_attribute("data-frames") or 0) >= 3)
        check("camera", "#cnnx-camera-flow")

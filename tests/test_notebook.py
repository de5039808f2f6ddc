"""cnnx.run in a notebook: the records as before, shown as a table of stages with their first maps and the answer,
rendered headless in Chromium as Jupyter would show the HTML."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

import cnnx
from cnnx.base.choices import SAMPLES


def _pictures(page: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
            for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_a_chain_run_is_its_records_and_shows_each_stages_maps():
    image = cnnx.load_image(SAMPLES / "chelsea.png").array
    result = cnnx.run(image)
    assert [r.name for r in result] == ["input", "conv", "relu", "maxpool", "conv", "relu", "maxpool"]
    page = result._repr_html_()
    assert page.count("<tr>") == len(result) + 1 and "conv(vertical_edge" in page
    pictures = _pictures(page)
    assert len(pictures) == 1 + 4 * 6  # the input, and four maps of each stage
    grey = pictures[0]
    assert grey.ndim == 3 and np.array_equal(grey[..., 0], grey[..., 1])  # the input drawn in grey
    relu = pictures[1 + 4 * 1]
    assert relu.min() < 200 and (relu[..., 0].astype(int) - relu[..., 2] >= 0).all()  # white to red, no blue


def test_a_model_run_shows_its_answer():
    result = cnnx.run(cnnx.load_image(SAMPLES / "star.png", color=False).array, cnnx.load_model("shapes"))
    assert result.answer[0][0] == "star"
    assert "<b>answer</b>: star" in result._repr_html_()


def test_the_notebook_view_draws_in_a_browser(tmp_path, browser):
    """Headless Chromium renders the HTML as a notebook would: every map is an image that loads."""
    from selenium.webdriver.common.by import By

    page = tmp_path / "run.html"
    page.write_text("<html><body>" + cnnx.run(cnnx.load_image(SAMPLES / "stripes.png").array)._repr_html_()
                    + "</body></html>")
    try:
        browser.get(page.as_uri())
        images = browser.find_elements(By.CSS_SELECTOR, ".cnnx-run img")
        assert len(images) == 25
        assert all(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images)
    finally:
        browser.quit()


@pytest.mark.parametrize("name", ["run", "Run", "load_model", "load_graph"])
def test_the_notebook_names_are_public(name):
    assert name in dir(cnnx) and getattr(cnnx, name) is not None


@pytest.mark.slow
def test_a_notebook_runs_and_nbconvert_shows_the_run(tmp_path):
    """A real notebook, executed by nbclient in an IPython kernel and converted by nbconvert: the cell that ends in
    ``cnnx.run(...)`` displays the run as HTML (not its repr), with the input and each stage's maps as PNGs whose
    pixels are the maps (the first ReLU's drawn white to red), and the shapes model's run names its answer."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nbconvert = pytest.importorskip("nbconvert")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import cnnx"),
        nbformat.v4.new_code_cell(f"cnnx.run(cnnx.load_image({str(SAMPLES / 'chelsea.png')!r}).array)"),
        nbformat.v4.new_code_cell(f"cnnx.run(cnnx.load_image({str(SAMPLES / 'star.png')!r}, color=False).array, "
                                  "cnnx.load_model('shapes'))"),
    ])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
                            ).execute()
    chain, model = (cell.outputs[0]["data"] for cell in notebook.cells[1:])
    assert "text/html" in chain and "text/html" in model
    page, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    pictures = _pictures(chain["text/html"])
    assert len(pictures) == 1 + 4 * 6
    shown = re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", chain["text/html"] + model["text/html"])
    assert all(picture in page for picture in shown)
    assert page.count("cnnx-run") >= 2  # both runs' HTML, as the notebook shows it
    relu = pictures[1 + 4 * 1]
    assert relu.min() < 200 and (relu[..., 0].astype(int) - relu[..., 2] >= 0).all()
    assert "<b>answer</b>: star" in model["text/html"]

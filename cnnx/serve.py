"""``cnnx serve``: the run's page, live, on a local web server: edit the stages or drop an image and it recomputes.

One session holds the image, the stages and the latest run (written with
``jobs.run_job``, raw arrays kept, so a value under the pointer is read
exactly).  The server listens on 127.0.0.1 by default, answers only requests
that name the address it printed (no DNS rebinding) and carry its token (a
cookie set by the URL it printed), serves nothing but the current run's files
and its own page, and turns every bad request into a one-line 4xx.
"""

from __future__ import annotations

import html
import json
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np

from cnnx.errors import CnnxError, is_known, message
from cnnx.jobs import Job, redraw_job, run_job

__all__ = ["Session", "make_server"]

BODY_LIMIT = 64 << 20  # bytes a request may send: an uploaded photo
KEPT_RUNS = 4  # runs kept on disk: the newest, and those pages in other tabs may still be showing


@dataclass(frozen=True)
class Run:
    """A finished run a page may show: its folder, the source of stages and the image it was made with."""

    number: int
    folder: Path
    source: object
    image: Path


@dataclass
class Session:
    """What the page shows: an image, a way to make its source of stages, the style, and the latest run."""

    image: Path
    make_source: object  # spec text (or None for the options given) -> source of stages
    style: object
    spec: str = ""
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cnnx-serve-")))
    outcome: object = None  # the newest run's stages and answer, to draw it again
    kept: dict = field(default_factory=dict)  # run number -> Run, the newest last
    count: int = 0
    error: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def recompute(self, *, spec: str | None = None, image: Path | None = None) -> None:
        """A new run with new stages or a new image; a failure keeps the run before and says why."""
        with self.lock:
            def run(target: Path):
                source = self.make_source(spec if spec is not None else (self.spec or None))
                return run_job(Job(image or self.image, target, source, self.style, save_raw=True, force=True))

            if self._attempt(run):
                self.spec, self.image = (spec if spec is not None else self.spec), (image or self.image)

    def redraw(self) -> None:
        """The run drawn again in the session's style, from its saved arrays: nothing is computed again."""
        with self.lock:
            self._attempt(lambda target: redraw_job(
                Job(self.image, target, self.source, self.style, save_raw=True, force=True), self.outcome))

    def _attempt(self, make) -> bool:
        """``make`` a run into the next folder and show it; a known failure keeps the run before and says why."""
        try:
            outcome = make(self._next())
        except Exception as error:
            if not is_known(error):
                raise
            self.error = message(error)
            return False
        self._show(outcome)
        return True

    def _next(self) -> Path:
        self.count += 1
        return self.folder / f"run-{self.count}"

    def _show(self, outcome) -> None:
        """``outcome`` is the run shown now; of the older ones, those a page in another tab may show are kept."""
        self.error = ""
        self.outcome = outcome
        self.kept[self.count] = Run(self.count, outcome.job.destination, outcome.job.source, outcome.job.image)
        while len(self.kept) > KEPT_RUNS:
            shutil.rmtree(self.kept.pop(next(iter(self.kept))).folder, ignore_errors=True)

    def _newest(self) -> Run | None:
        with self.lock:
            return self.kept[next(reversed(self.kept))] if self.kept else None

    @property
    def run(self) -> Path | None:
        """The newest run's folder; None before the first."""
        newest = self._newest()
        return newest and newest.folder

    @property
    def source(self):
        """The source of stages the newest run was made with."""
        newest = self._newest()
        return newest and newest.source

    def shown(self, number: int | None = None) -> Run:
        """Run ``number`` (the newest when None), while it is kept: a page reads the run it shows, whatever the
        other tabs have run since."""
        with self.lock:
            chosen = self._newest() if number is None else self.kept.get(number)
        if chosen is None:
            raise CnnxError("this page's run was replaced by newer ones: reload the page")
        return chosen

    def filters(self) -> dict:
        """The 2-D kernels of the run's conv stages, as numbers to edit, and the bank's, to pick from."""
        from cnnx.kernels import BANK

        pipeline = getattr(self.source, "pipeline", None)
        editable = [
            {"stage": number, "index": index, "spec": conv.filters[index], "weights": kernels[0].weights.tolist()}
            for number, conv in enumerate(pipeline.stages if pipeline else (), 1)
            if conv.name == "conv"
            for index, kernels in enumerate(conv.sources)
            if isinstance(kernels, tuple)
        ]
        return {"filters": editable, "bank": {name: entry.kernel().tolist() for name, entry in BANK.items()}}

    def set_filter(self, stage: int, index: int, weights: list) -> None:
        """Stage ``stage``'s filter ``index`` becomes the kernel ``weights``, and every map is computed again."""
        from dataclasses import replace

        from cnnx.spec import pipeline_text

        pipeline = getattr(self.source, "pipeline", None)
        if pipeline is None or not 1 <= stage <= len(pipeline.stages) or pipeline.stages[stage - 1].name != "conv":
            raise CnnxError(f"stage {stage} is not a conv stage of the chain")
        conv = pipeline.stages[stage - 1]
        if not 0 <= index < len(conv.filters):
            raise CnnxError(f"stage {stage} has {len(conv.filters)} filters")
        rows = np.asarray(weights, dtype=np.float64)  # a ragged or non-numeric grid is a ValueError: a 400
        if rows.ndim != 2 or not np.isfinite(rows).all():
            raise CnnxError("a kernel is a grid of finite numbers")
        matrix = "[" + ",".join("[" + ",".join(repr(float(v)) for v in row) + "]" for row in rows) + "]"
        filters = (*conv.filters[:index], matrix, *conv.filters[index + 1 :])
        stages = (*pipeline.stages[: stage - 1], replace(conv, filters=filters), *pipeline.stages[stage:])
        self.recompute(spec=pipeline_text(replace(pipeline, stages=stages)))
        if self.error:
            raise CnnxError(self.error)

    def set_style(self, asked: dict) -> None:
        """Draw the run again with another normalisation, scope, colour map or stretch; a bad choice keeps the style
        before."""
        from dataclasses import replace

        unknown = set(asked) - {"normalize", "scope", "cmap", "stretch"}
        if unknown:
            raise CnnxError(f"the style takes normalize, scope, cmap and stretch; not {', '.join(sorted(unknown))}")
        before, self.style = self.style, replace(self.style, **{k: str(v) for k, v in asked.items()})
        self.redraw()
        if self.error:
            self.style = before
            raise CnnxError(self.error)

    def upload(self, data: bytes, suffix: str) -> None:
        """Run an image sent by the page; it is kept only while it is the one shown."""
        with self.lock:  # no other upload is removed while it is being run
            upload = self.folder / f"upload-{secrets.token_hex(4)}{suffix if suffix.isascii() else ''}"
            upload.write_bytes(data)
            self.recompute(image=upload)
            for old in self.folder.glob("upload-*"):
                if old != self.image:
                    old.unlink(missing_ok=True)
        if self.error:
            raise CnnxError(self.error)

    def show_sample(self, name: str) -> None:
        """Run one of the pictures shipped with cnnx, named as the page lists them (never a path)."""
        from cnnx.choices import SAMPLES

        if name not in shipped_samples():
            raise CnnxError(f"the samples are {', '.join(shipped_samples())}; not {name!r}")
        self.recompute(image=SAMPLES / name)
        if self.error:
            raise CnnxError(self.error)

    def archive(self, number: int | None = None) -> tuple[str, bytes]:
        """A run as a zip of the folder ``cnnx pipeline`` writes, and the name to save it under."""
        import io
        import zipfile

        shown = self.shown(number)
        name = f"{shown.image.stem}_cnnx"
        buffer = io.BytesIO()
        with self.lock, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in shown.folder.rglob("*") if p.is_file()):
                # PNGs are compressed already; deflating them again only costs time.
                kind = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
                archive.write(path, f"{name}/{path.relative_to(shown.folder).as_posix()}", compress_type=kind)
        return f"{name}.zip", buffer.getvalue()

    def explain(self, stage: int, channel: int, row: int, col: int, number: int | None = None) -> dict:
        """How the value there came from the stage before: the same arithmetic ``cnnx explain`` shows, as JSON."""
        from cnnx.explain import LayerExplanation, as_json, explain_stage

        shown = self.shown(number)  # one run throughout, whatever a recompute does meanwhile
        entries = _stages(shown.folder)
        _value_at(shown.folder, entries, stage, channel, row, col)  # checks the place

        def array(k: int) -> np.ndarray:
            return np.load(shown.folder / entries[k]["raw"], allow_pickle=False)

        explained = explain_stage(shown.source, stage, channel, row, col, array)
        data = as_json(explained)
        if isinstance(explained, LayerExplanation):
            kept = sum(part["values"] is not None for part in data["parts"])
            data["rule"] = (
                f"{entries[stage]['description']}: the sum over the {len(data['parts'])} input channels "
                f"of the window times the weights, plus the bias (the {kept} that weigh most shown)"
            )
        return data

    def value(self, stage: int, channel: int, row: int, col: int, number: int | None = None) -> dict:
        """The exact value under the pointer, from the run's raw arrays."""
        run = self.shown(number).folder
        return _value_at(run, _stages(run), stage, channel, row, col)


def _run_number(query: str) -> int | None:
    """The ``run`` a request names, if it names one."""
    given = parse_qs(query).get("run")
    return int(given[0]) if given else None


def _stages(run: Path) -> list[dict]:
    """The manifest's record of each stage of ``run``."""
    return json.loads((run / "manifest.json").read_text())["stages"]


def _value_at(run: Path, entries: list[dict], stage: int, channel: int, row: int, col: int) -> dict:
    """The value at a place of a stage of ``run``, read from its raw array; a place outside the maps is an error."""
    if not 0 <= stage < len(entries) or not entries[stage].get("raw"):
        raise CnnxError(f"no stage {stage}")
    array = np.load(run / entries[stage]["raw"], mmap_mode="r", allow_pickle=False)
    if not (0 <= channel < array.shape[0] and 0 <= row < array.shape[1] and 0 <= col < array.shape[2]):
        raise CnnxError(f"stage {stage} has {array.shape[0]} maps of {array.shape[1]}x{array.shape[2]}")
    return {"stage": stage, "channel": channel, "row": row, "col": col, "value": float(array[channel, row, col]),
            "receptive_field": entries[stage]["receptive_field"], "jump": entries[stage]["jump"]}


TOOLBAR = """<div id="cnnx-live" style="position:sticky;top:0;z-index:2;background:var(--card);
border:1px solid var(--line);border-radius:8px;padding:.6rem 1rem;margin:.5rem 0">
<form method="post" action="/api/spec" style="display:flex;flex-wrap:wrap;gap:.5rem;align-items:center">
<label for="cnnx-spec">stages</label>
<input id="cnnx-spec" name="spec" value="{spec}" style="flex:1 1 24rem;font-family:ui-monospace,monospace">
<button type="submit">run</button>
<label>image <input id="cnnx-upload" type="file" accept="image/*"></label>
<label>or a sample <select id="cnnx-sample"><option value="">(choose)</option>{samples}</select></label>
<a href="/api/download?run={run}" download>download the run</a>
</form>
<div id="cnnx-style">colours: {style}</div>
<details id="cnnx-filters" hidden style="margin-top:.3rem"><summary>edit a filter</summary>
<label>filter <select id="cnnx-filter"></select></label>
<label>numbers from the bank <select id="cnnx-bank"><option value="">(its own)</option></select></label>
<div id="cnnx-grid" style="margin:.3rem 0;overflow-x:auto"></div>
<button type="button" id="cnnx-apply">apply: compute every map again</button>
</details>
<p id="cnnx-error" style="color:var(--accent);margin:.3rem 0 0">{error}</p>
<p id="cnnx-value" aria-live="polite" style="margin:.3rem 0 0">Point at a map to read the value under the pointer;
click to see how it was computed. Drop an image anywhere on the page to run it.</p>
<div id="cnnx-explain" aria-live="polite" style="max-height:min(45vh,24rem);overflow:auto"></div>
</div>
<script>
(async () => {{
  const RUN = {run};  // the run this page shows: every value it asks for is of this run
  const manifest = await (await fetch(`/run/${{RUN}}/manifest.json`)).json();
  const show = document.getElementById("cnnx-value");
  const escape = text => String(text).replace(/[&<>"']/g, c => `&#${{c.charCodeAt(0)}};`);
  const grid = (rows, title) => {{
    const scale = Math.max(1e-12, ...rows.flat().filter(v => v !== null && isFinite(v)).map(Math.abs));
    const cells = rows.map(r => "<tr>" + r.map(v => {{
      if (v === null || !isFinite(v)) return "<td style='color:var(--muted)'>pad</td>";
      const a = Math.min(1, Math.abs(v) / scale), colour = v < 0 ? `rgba(33,102,172,${{a}})` : `rgba(178,24,43,${{a}})`;
      return `<td style="background:${{colour}};padding:1px 4px;text-align:right">${{Number(v).toPrecision(3)}}</td>`;
    }}).join("") + "</tr>").join("");
    return `<table style="border-collapse:collapse;font-size:.8rem;display:inline-table;margin:0 .6rem .4rem 0">` +
      `<caption style="text-align:left">${{title}}</caption>${{cells}}</table>`;
  }};
  document.querySelectorAll("figure img").forEach(img => {{
    const src = img.getAttribute("src");
    const stage = manifest.stages.findIndex(s => s.maps.some(m => m.tile === src));
    if (stage < 0) return;
    const entry = manifest.stages[stage].maps.find(m => m.tile === src);
    const [C, H, W] = manifest.stages[stage].shape;
    // The value under the pointer: its row and column in the map, and the query that names it.
    const place = event => {{
      const box = img.getBoundingClientRect();
      const row = Math.min(H - 1, Math.floor((event.clientY - box.top) / box.height * H));
      const col = Math.min(W - 1, Math.floor((event.clientX - box.left) / box.width * W));
      return [row, col, `stage=${{stage}}&channel=${{entry.channel}}&row=${{row}}&col=${{col}}&run=${{RUN}}`];
    }};
    img.addEventListener("mousemove", async event => {{
      const [row, col, query] = place(event);
      const answer = await fetch(`/api/value?${{query}}`);
      const data = await answer.json();
      show.textContent = answer.ok ? `stage ${{stage}}, map ${{entry.channel}} (${{entry.label}}), row ${{row}}, ` +
        `column ${{col}}: ${{data.value.toPrecision(6)}}; it sees ${{data.receptive_field.join("x")}} input pixels`
        : data.error;
      // The square of input pixels this value sees, moved to where the pointer is, on the stage's input picture.
      const square = document.querySelector(`#stage-${{stage}} .field rect`);
      if (answer.ok && square && data.jump) {{
        const [rh, rw] = data.receptive_field, [jh, jw] = data.jump;
        square.setAttribute("x", (col + 0.5) * jw - rw / 2);
        square.setAttribute("y", (row + 0.5) * jh - rh / 2);
      }}
    }});
    img.addEventListener("click", async event => {{
      event.preventDefault();
      const [row, col, query] = place(event);
      const answer = await fetch(`/api/explain?${{query}}`);
      const data = await answer.json(), panel = document.getElementById("cnnx-explain");
      if (!answer.ok) {{ panel.textContent = data.error; return; }}
      let text = `<button type="button" id="cnnx-close" style="float:right" aria-label="close">close</button>` +
        `<p><b>stage ${{stage}}, map ${{entry.channel}}, row ${{row}}, column ${{col}}</b>: ${{escape(data.rule)}}</p>`;
      for (const part of (data.parts || []).filter(p => p.values).slice(0, 4)) {{
        text += `<div>input channel ${{part.channel}}: ` + grid(part.values, "window") +
          (part.weights ? grid(part.weights, "weights") + grid(part.products, "products") : "") +
          `<span style="white-space:nowrap">sum ${{Number(part.total).toPrecision(6)}}</span></div>`;
      }}
      if ((data.parts || []).length > 4) text += `<p>... ${{data.parts.length}} input channels in all</p>`;
      const inputs = (data.inputs || []).map((v, k) =>
        (data.names && data.names[k] ? escape(data.names[k]) + " " : "") + Number(v).toPrecision(6));
      if (inputs.length) text += `<p>from ${{inputs.join(", ")}}</p>`;
      text += `<p id="cnnx-total">${{data.bias ? "plus bias " + Number(data.bias).toPrecision(6) + ": " : ""}}` +
        `= <b>${{Number(data.total).toPrecision(6)}}</b></p>`;
      panel.innerHTML = text;
      document.getElementById("cnnx-close").addEventListener("click", () => {{ panel.innerHTML = ""; }});
    }});
  }});
  if (manifest.model && manifest.model.answer) drawingPad(manifest.model.answer);
  document.querySelectorAll("#cnnx-style select").forEach(choice => choice.addEventListener("change", async () => {{
    const answer = await fetch("/api/style", {{method: "POST", headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{[choice.name]: choice.value}})}});
    if (answer.ok) location.reload();
    else document.getElementById("cnnx-error").textContent = (await answer.json()).error;
  }}));
  const editable = await (await fetch("/api/filters")).json();
  if (editable.filters.length) filterEditor(editable);
  const reloadOr = async answer => {{
    if (answer.ok) location.reload();
    else document.getElementById("cnnx-error").textContent = (await answer.json()).error;
  }};
  const sendImage = async file => reloadOr(
    await fetch("/api/image", {{method: "POST", body: file, headers: {{"X-File-Name": file.name}}}}));
  document.getElementById("cnnx-upload").addEventListener("change", event => sendImage(event.target.files[0]));
  document.getElementById("cnnx-sample").addEventListener("change", async event => reloadOr(
    await fetch("/api/sample", {{method: "POST", headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{name: event.target.value}})}})));
  document.addEventListener("dragover", event => {{
    event.preventDefault();
    document.body.style.outline = "3px dashed var(--accent)";
  }});
  document.addEventListener("dragleave", event => {{
    if (!event.relatedTarget) document.body.style.outline = "";
  }});
  document.addEventListener("drop", event => {{
    event.preventDefault();
    document.body.style.outline = "";
    const file = event.dataTransfer.files[0];
    if (file) sendImage(file);
  }});
}})();
// The chain's 2-D kernels as a grid of numbers: edit them, or take a bank filter's, and every map is computed again.
function filterEditor({{filters, bank}}) {{
  const box = document.getElementById("cnnx-filters"), pick = document.getElementById("cnnx-filter");
  const from = document.getElementById("cnnx-bank"), grid = document.getElementById("cnnx-grid");
  box.hidden = false;
  filters.forEach((filter, k) => pick.add(new Option(`stage ${{filter.stage}}: ${{filter.spec}}`, k)));
  Object.keys(bank).forEach(name => from.add(new Option(name, name)));
  const fill = weights => {{
    grid.innerHTML = "<table style='border-collapse:collapse'>" + weights.map(row => "<tr>" + row.map(v =>
      `<td><input inputmode="decimal" value="${{+v.toPrecision(6)}}" aria-label="weight" ` +
      `style="width:11ch;font:.8rem ui-monospace,monospace"></td>`).join("") +
      "</tr>").join("") + "</table>";
  }};
  pick.addEventListener("change", () => {{ from.value = ""; fill(filters[pick.value].weights); }});
  from.addEventListener("change", () => fill(from.value ? bank[from.value] : filters[pick.value].weights));
  fill(filters[0].weights);
  document.getElementById("cnnx-apply").addEventListener("click", async () => {{
    const weights = [...grid.querySelectorAll("tr")].map(row => [...row.querySelectorAll("input")].map(
      cell => cell.value === "" ? NaN : Number(cell.value)));
    const filter = filters[pick.value];
    const answer = await fetch("/api/filter", {{method: "POST", headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{stage: filter.stage, index: filter.index, weights}})}});
    if (answer.ok) location.reload();
    else document.getElementById("cnnx-error").textContent = (await answer.json()).error;
  }});
}}
// A canvas to draw on: each stroke is sent as the image and the page comes back with the model's answer to it.
// The drawing is kept in the tab's session storage, so it survives the reload and the next stroke adds to it.
function drawingPad(answer) {{
  const [best, share] = Object.entries(answer).sort((a, b) => b[1] - a[1])[0];
  const pad = document.createElement("div");
  pad.innerHTML = `<p style="margin:.3rem 0">Draw on the square in dark ink; the model answers each stroke: ` +
    `<b id="cnnx-answer"></b> ` +
    `<button type="button" id="cnnx-clear">clear</button></p>` +
    `<canvas id="cnnx-canvas" width="192" height="192" style="border:1px solid var(--line);touch-action:none;` +
    `cursor:crosshair"></canvas>`;
  document.getElementById("cnnx-live").appendChild(pad);
  document.getElementById("cnnx-answer").textContent = `${{best}} ${{(share * 100).toFixed(1)}}%`;
  const canvas = document.getElementById("cnnx-canvas"), pen = canvas.getContext("2d");
  const blank = () => {{ pen.fillStyle = "#fff"; pen.fillRect(0, 0, canvas.width, canvas.height); }};
  blank();
  const kept = sessionStorage.getItem("cnnx-drawing");
  if (kept) {{ const picture = new Image(); picture.onload = () => pen.drawImage(picture, 0, 0); picture.src = kept; }}
  pen.lineWidth = 7; pen.lineCap = pen.lineJoin = "round"; pen.strokeStyle = "#111";
  let drawing = false;
  const at = event => {{
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  }};
  canvas.addEventListener("pointerdown", event => {{ drawing = true; pen.beginPath(); pen.moveTo(...at(event)); }});
  canvas.addEventListener("pointermove", event => {{ if (drawing) {{ pen.lineTo(...at(event)); pen.stroke(); }} }});
  const send = () => {{
    if (!drawing) return;
    drawing = false;
    sessionStorage.setItem("cnnx-drawing", canvas.toDataURL("image/png"));
    canvas.toBlob(async blob => {{
      const sent = await fetch("/api/image", {{method: "POST", body: blob, headers: {{"X-File-Name": "drawing.png"}}}});
      if (sent.ok) location.reload();
      else document.getElementById("cnnx-error").textContent = (await sent.json()).error;
    }}, "image/png");
  }};
  canvas.addEventListener("pointerup", send);
  canvas.addEventListener("pointerleave", send);
  document.getElementById("cnnx-clear").addEventListener("click", () => {{
    sessionStorage.removeItem("cnnx-drawing"); blank(); }});
}}
</script>
"""


def shipped_samples() -> list[str]:
    """The names of the pictures shipped with cnnx."""
    from cnnx.choices import SAMPLES

    return sorted(path.name for path in SAMPLES.glob("*.png"))


def _style_choices(style) -> str:
    """Selects for how maps are drawn, the style's own choices selected."""
    from cnnx.choices import NORMALIZE, SCOPES, STRETCHES
    from cnnx.draw import CMAP_ALIASES

    def select(name: str, options, chosen: str) -> str:
        listed = [*options] + ([chosen] if chosen not in options else [])
        items = "".join(f"<option{' selected' if o == chosen else ''}>{html.escape(o)}</option>" for o in listed)
        return f'<label style="white-space:nowrap">{name} <select name="{name}">{items}</select></label>'

    ranged = [n for n in NORMALIZE if n != "fixed" or style.fixed]  # fixed needs a --range
    chosen = [
        select("normalize", ranged, style.normalize),
        select("scope", SCOPES, style.scope),
        select("cmap", list(CMAP_ALIASES), style.cmap),
        select("stretch", STRETCHES, style.stretch),
    ]
    return " ".join(chosen)


class _Handler(BaseHTTPRequestHandler):
    """One request: checked for its Host and token, answered from the session, never with a traceback."""

    server_version = "cnnx"
    session: Session
    token: str
    hosts: set[str]

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # a quiet server: the terminal shows the URL and errors only

    def _reply(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, text: str) -> None:
        self._reply(status, json.dumps({"error": text}).encode(), "application/json")

    def _allowed(self) -> bool:
        """The Host the server printed, and its token in the cookie or (the first time) the URL."""
        if self.headers.get("Host", "") not in self.hosts:
            self._error(HTTPStatus.FORBIDDEN, "this server answers only at the address it printed")
            return False
        query = parse_qs(urlsplit(self.path).query)
        cookie = self.headers.get("Cookie", "")
        given = {part.strip().partition("=")[2] for part in cookie.split(";") if part.strip().startswith("cnnx-token=")}
        if self.token in given:
            return True
        if secrets.compare_digest(query.get("token", [""])[0], self.token):
            cookie = f"cnnx-token={self.token}; HttpOnly; SameSite=Strict; Path=/"
            self._reply(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return False
        self._error(HTTPStatus.FORBIDDEN, "open the URL cnnx printed, with its token")
        return False

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        self._guarded(self._get)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _guarded(self, answer) -> None:
        try:
            if self._allowed():
                answer()
        except CnnxError as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error))
        except (ValueError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as error:
            self._error(HTTPStatus.BAD_REQUEST, f"malformed request ({type(error).__name__})")
        except OSError as error:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, message(error))

    def _get(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path == "/":
            self._page()
        elif path.startswith("/run/"):
            self._file(path[len("/run/") :])
        elif path == "/api/download":
            name, body = self.session.archive(_run_number(url.query))
            self._reply(
                HTTPStatus.OK, body, "application/zip", {"Content-Disposition": f'attachment; filename="{quote(name)}"'}
            )
        elif path == "/api/filters":
            self._reply(HTTPStatus.OK, json.dumps(self.session.filters()).encode(), "application/json")
        elif path in ("/api/value", "/api/explain"):
            query = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
            answer = self.session.value if path == "/api/value" else self.session.explain
            value = answer(query["stage"], query["channel"], query["row"], query["col"], query.get("run"))
            self._reply(HTTPStatus.OK, json.dumps(value).encode(), "application/json")
        else:
            self._error(HTTPStatus.NOT_FOUND, "no such page")

    def _page(self) -> None:
        session = self.session
        shown = session.shown()
        page = (shown.folder / "index.html").read_text()
        record = json.loads((shown.folder / "manifest.json").read_text())
        spec = session.spec or record.get("pipeline", {}).get("spec", "")
        toolbar = TOOLBAR.format(
            spec=html.escape(spec), error=html.escape(session.error), style=_style_choices(session.style),
            run=shown.number,
            samples="".join(f"<option>{html.escape(name)}</option>" for name in shipped_samples()),
        )
        base = f'<head>\n<base href="/run/{shown.number}/">'
        page = page.replace("<head>", base, 1).replace("<body>", "<body>\n" + toolbar, 1)
        self._reply(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

    def _file(self, relative: str) -> None:
        """A file of a run (``N/file`` of run N, ``file`` of the newest), and nothing outside it: the path is
        resolved and must stay inside."""
        number, _, rest = relative.partition("/")
        if number.isdigit() and rest:
            try:
                run = self.session.shown(int(number)).folder.resolve()
            except CnnxError as error:
                self._error(HTTPStatus.NOT_FOUND, str(error))
                return
            relative = rest
        else:
            run = self.session.shown().folder.resolve()
        target = (run / relative).resolve()
        if run not in target.parents or not target.is_file():
            self._error(HTTPStatus.NOT_FOUND, "no such file in this run")
            return
        kind = {".png": "image/png", ".json": "application/json", ".html": "text/html; charset=utf-8"}.get(
            target.suffix, "application/octet-stream"
        )
        self._reply(HTTPStatus.OK, target.read_bytes(), kind)

    def _body(self) -> bytes | None:
        """The request's body; None, answered with 413, when it is over the limit (it is then not read)."""
        length = int(self.headers.get("Content-Length", "0"))
        if length < 0:
            raise ValueError("a negative length")
        if length > BODY_LIMIT:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {BODY_LIMIT >> 20} MiB a request")
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/api/spec", "/api/image", "/api/sample", "/api/filter", "/api/style"):
            self._error(HTTPStatus.NOT_FOUND, "no such action")
            return
        body = self._body()
        if body is None:
            return
        if path == "/api/spec":
            form = parse_qs(body.decode("utf-8"), strict_parsing=bool(body))
            self.session.recompute(spec=form.get("spec", [""])[0] or None)
            self._reply(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/"})
            return
        if path == "/api/image":
            self.session.upload(body, Path(self.headers.get("X-File-Name", "")).suffix)
            self._reply(HTTPStatus.OK, b"{}", "application/json")
            return
        asked = json.loads(body)
        if path == "/api/style":
            self.session.set_style(dict(asked))
        elif path == "/api/sample":
            self.session.show_sample(str(asked["name"]))
        else:
            self.session.set_filter(int(asked["stage"]), int(asked["index"]), asked["weights"])
        self._reply(HTTPStatus.OK, b"{}", "application/json")


def make_server(session: Session, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A server for ``session`` and the URL (with its token) to open; port 0 takes a free one."""
    token = secrets.token_urlsafe(24)
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    bound = server.server_address[1]
    hosts = {f"{host}:{bound}", f"localhost:{bound}"} if host in ("127.0.0.1", "localhost") else {f"{host}:{bound}"}
    server.RequestHandlerClass = type("Handler", (_Handler,), {"session": session, "token": token, "hosts": hosts})
    return server, f"http://{host}:{bound}/?token={token}"

"""What ``cnnx serve`` shows: one session's image, stages and style, and its latest runs, computed one at a time.

One session holds the image, the stages and the latest runs (written with
``jobs.run_job``, raw arrays kept, so a value under the pointer is read
exactly).  Computing is one at a time; a newer request replaces an older one,
which is given up between two stages, while the runs already made stay
readable.  ``serve`` answers the page's requests from it.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cnnx.app.inputs import IMAGE_SUFFIXES
from cnnx.app.jobs import Job, redraw_job, run_job
from cnnx.app.shell import pixel_limit
from cnnx.base.errors import Cancelled, CnnxError, is_known, message
from cnnx.io.output import safe_name

__all__ = ["KEPT_RUNS", "Run", "Session", "shipped_samples"]

KEPT_RUNS = 4  # runs kept on disk: the newest, and those pages in other tabs may still be showing
# The stages the page's editor adds, as each new one starts (a conv's filters are picked from the bank).
NEW_STAGES = {"conv": "conv", "relu": "relu", "leaky_relu": "leaky_relu(0.1)", "sigmoid": "sigmoid", "tanh": "tanh",
              "abs": "abs", "maxpool": "maxpool(2)", "avgpool": "avgpool(2)", "global_avgpool": "global_avgpool"}
FRAME_PIXELS = 1024 * 1024  # a camera frame's pixels, at most: the page sends 256x256


@dataclass(frozen=True)
class Run:
    """A finished run a page may show: its folder, the source of stages and the image it was made with."""

    number: int
    folder: Path
    source: object
    image: Path


@dataclass
class Session:
    """What the page shows: an image, a way to make its source of stages, the style, and the latest runs.

    ``lock`` guards the session's fields for a moment at a time; ``computing`` is held by the one computation
    under way.  Each request to compute takes a ticket; a computation whose ticket is no longer the newest (or
    whose session is closing) gives up between two stages.
    """

    image: Path
    make_source: object  # spec text (or None for the options given) -> source of stages
    style: object
    spec: str = ""
    max_pixels: int = 0  # images with more pixels are refused (0: the default limit)
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cnnx-serve-")))
    outcome: object = None  # the newest run's stages and answer, to draw it again
    kept: dict = field(default_factory=dict)  # run number -> Run, the newest last
    count: int = 0
    error: str = ""
    wanted: int = 0  # the newest ticket
    closing: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    computing: threading.Lock = field(default_factory=threading.Lock, repr=False)
    framing: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one camera frame at a time
    looked: dict = field(default_factory=dict, repr=False)  # what each channel looks for, found once a source
    seen: list = field(default_factory=list, repr=False)  # the images shown, newest last (at most SEEN_KEPT)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def recompute(self, *, spec: str | None = None, image: Path | None = None) -> None:
        """A new run with new stages or a new image; a failure keeps the run before and says why."""
        with self.lock:
            spec = spec if spec is not None else self.spec
            image = image or self.image
            style = self.style

        def run(target: Path, cancelled) -> object:
            source = self.make_source(spec or None)
            limit = pixel_limit(self.max_pixels)
            return run_job(Job(image, target, source, style, save_raw=True, force=True, **limit), cancelled=cancelled)

        if self._attempt(run):
            with self.lock:
                before, self.spec, self.image = self.image, spec, image
                if image not in self.seen:
                    self.seen = [*self.seen, image][-SEEN_KEPT:]
            if before != image and before.parent.name.startswith("upload-") and before.parent.parent == self.folder:
                shutil.rmtree(before.parent, ignore_errors=True)  # the upload shown before is shown no more

    def redraw(self, style=None) -> bool:
        """The run drawn again in ``style`` (the session's by default), from its saved arrays: nothing is computed
        again.  True if it was drawn."""
        with self.lock:
            style = style or self.style
            outcome = self.outcome

        def draw(target: Path, cancelled) -> object:
            return redraw_job(Job(outcome.job.image, target, outcome.job.source, style, save_raw=True, force=True),
                              outcome)

        return self._attempt(draw)

    def _attempt(self, make) -> bool:
        """``make(folder, cancelled)`` a run into the next folder and show it; a known failure keeps the run before
        and says why.  Raises ``Cancelled`` when a newer request replaced this one, before or while it ran."""
        with self.lock:
            self.wanted += 1
            ticket = self.wanted

        def replaced() -> bool:
            return self.closing or self.wanted != ticket

        with self.computing:
            if replaced():
                raise Cancelled("a newer request replaced this one")
            with self.lock:
                self.count += 1
                target = self.folder / f"run-{self.count}"
            try:
                outcome = make(target, replaced)
            except Cancelled:
                raise
            except Exception as error:
                if not is_known(error):
                    raise
                with self.lock:
                    self.error = message(error)
                return False
            with self.lock:
                self._show(target, outcome)
            return True

    def _show(self, folder: Path, outcome) -> None:
        """``outcome`` is the run shown now; of the older ones, those a page in another tab may show are kept."""
        number = int(folder.name.removeprefix("run-"))
        self.error = ""
        self.outcome = outcome
        self.kept[number] = Run(number, folder, outcome.job.source, outcome.job.image)
        while len(self.kept) > KEPT_RUNS:
            shutil.rmtree(self.kept.pop(next(iter(self.kept))).folder, ignore_errors=True)

    def close(self, seconds: float = 1.5) -> None:
        """Give up what is computing (between two stages), wait a moment for it, and remove every run."""
        with self.lock:
            self.closing = True
        held = self.computing.acquire(timeout=seconds)
        try:
            for _ in range(20):  # a stage's files may still be landing while it gives up
                shutil.rmtree(self.folder, ignore_errors=True)
                if not self.folder.exists():
                    break
                time.sleep(0.05)
        finally:
            if held:
                self.computing.release()

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
        """What the page's editors edit: the 2-D kernels of the run's conv stages, as numbers, and the bank's, to
        pick from; for a chain, each stage's spec text and the kinds of stage that can be added."""
        from cnnx.sources.kernels import BANK
        from cnnx.sources.pipeline import Chain
        from cnnx.sources.spec import stage_text

        pipeline = self.source.pipeline
        editable = [
            {"stage": number, "index": index, "spec": conv.filters[index], "weights": kernels[0].weights.tolist()}
            for number, conv in enumerate(pipeline.stages if pipeline else (), 1)
            if conv.name == "conv"
            for index, kernels in enumerate(conv.sources)
            if isinstance(kernels, tuple)
        ]
        chain = isinstance(self.source, Chain)
        return {"filters": editable, "bank": {name: entry.kernel().tolist() for name, entry in BANK.items()},
                "stages": [stage_text(stage) for stage in pipeline.stages] if chain else [],
                "kinds": NEW_STAGES if chain else {}}

    def set_filter(self, stage: int, index: int, weights: list) -> None:
        """Stage ``stage``'s filter ``index`` becomes the kernel ``weights``, and every map is computed again."""
        from cnnx.sources.spec import pipeline_text

        pipeline = self.source.pipeline
        if pipeline is None or not 1 <= stage <= len(pipeline.stages) or pipeline.stages[stage - 1].name != "conv":
            raise CnnxError(f"stage {stage} is not a conv stage of the chain")
        conv = pipeline.stages[stage - 1]
        if not 0 <= index < len(conv.filters):
            raise CnnxError(f"stage {stage} has {len(conv.filters)} filters")
        rows = _grid(weights)
        matrix = "[" + ",".join("[" + ",".join(repr(float(v)) for v in row) + "]" for row in rows) + "]"
        filters = (*conv.filters[:index], matrix, *conv.filters[index + 1 :])
        stages = (*pipeline.stages[: stage - 1], replace(conv, filters=filters), *pipeline.stages[stage:])
        self.recompute(spec=pipeline_text(replace(pipeline, stages=stages)))
        self.raise_error()

    def set_style(self, asked: dict) -> None:
        """Draw the run again with another normalisation, scope, colour map or stretch; a bad choice keeps the style
        before."""
        unknown = set(asked) - {"normalize", "scope", "cmap", "stretch"}
        if unknown:
            raise CnnxError(f"the style takes normalize, scope, cmap and stretch; not {', '.join(sorted(unknown))}")
        if not all(isinstance(v, str) for v in asked.values()):
            raise CnnxError("each style choice is a name, e.g. {\"cmap\": \"viridis\"}")
        with self.lock:
            style = replace(self.style, **asked)
        if self.redraw(style):
            with self.lock:
                self.style = style
        self.raise_error()

    def upload(self, data: bytes, name: str) -> None:
        """Run an image sent by the page, kept under its own name; it stays only while it is the one shown."""
        suffix = Path(name).suffix.lower()
        stem = safe_name(Path(name).stem, fallback="upload")
        holder = self.folder / f"upload-{secrets.token_hex(4)}"
        holder.mkdir()
        upload = holder / f"{stem}{suffix if suffix in IMAGE_SUFFIXES else ''}"
        upload.write_bytes(data)
        try:
            self.recompute(image=upload)
        finally:
            with self.lock:
                shown = self.image == upload
            if not shown:  # refused, failed or replaced: only the upload shown is kept
                shutil.rmtree(holder, ignore_errors=True)
        self.raise_error()

    def frame(self, data: bytes) -> dict:
        """The shown run's stages on one camera frame, computed and drawn in memory (a frame is never written; the
        page saves one as an upload), as ``frame_view`` gives them."""
        from cnnx.io.images import decode_image
        from cnnx.render.notebook import frame_view

        source = self.shown().source
        with self.framing:
            image = decode_image(data, Path("the camera frame"), color=source.color, max_pixels=FRAME_PIXELS)
            records = list(source.stream(source.prepare(image.array)))
            return frame_view(records, source.answer(records[-1].array))

    def show_sample(self, name: str) -> None:
        """Run one of the pictures shipped with cnnx, named as the page lists them (never a path)."""
        from cnnx.base.choices import SAMPLES

        if name not in shipped_samples():
            raise CnnxError(f"the samples are {', '.join(shipped_samples())}; not {name!r}")
        self.recompute(image=SAMPLES / name)
        self.raise_error()

    def raise_error(self) -> None:
        """The failure of the request just made, if it failed, as a CnnxError (a 400)."""
        with self.lock:
            error = self.error
        if error:
            raise CnnxError(error)

    def archive(self, number: int | None = None) -> tuple[str, bytes]:
        """A run as a zip of the folder ``cnnx pipeline`` writes, and the name to save it under."""
        import io
        import zipfile

        shown = self.shown(number)
        name = f"{safe_name(shown.image.stem, fallback='image')}_cnnx"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
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

    def lesson(self, number: int | None = None) -> dict:
        """The lesson's six steps on the shown run's image and stages (``lesson_tour``)."""
        from cnnx.explain.lesson import lesson_tour
        from cnnx.io.images import load_image

        shown = self.shown(number)
        loaded = load_image(shown.image, color=shown.source.color, **pixel_limit(self.max_pixels))
        return {"steps": lesson_tour(shown.source, loaded.array)}

    def why(self, method: str | None, place: tuple[int, int, int, int] | None = None, label: str | None = None,
            number: int | None = None) -> dict:
        """What in the run's input drove its answer (``label``, by default the top class) or a stage's value at
        ``place`` (stage, channel, row, column), by ``method``: the overlay written into the run as ``why/``, and
        its words."""
        from cnnx.explain.why import WhySettings, class_target, default_method, explain_why, stage_target, why_lines
        from cnnx.io.png import write_png
        from cnnx.render.why import display_image, overlay_picture

        shown = self.shown(number)
        method = method or default_method(shown.source)
        entries = _stages(shown.folder)
        if place is not None:
            _value_at(shown.folder, entries, *place)  # checks the place
        image = np.load(shown.folder / entries[0]["raw"], allow_pickle=False)
        if place is not None:
            target, what = stage_target(place[0], place[1], place[2:])
        else:
            target, what = class_target(shown.source, image, label or None)
        with self.computing:  # one heavy computation at a time, as runs are
            result = explain_why(shown.source, image, target, WhySettings(method, steps=16, samples=8), what)
        lines = why_lines(result)
        name = "-".join(str(v) for v in (method, *(place or ()), target.label if target.label is not None else ""))
        folder = shown.folder / "why"
        folder.mkdir(exist_ok=True)
        write_png(folder / f"{name.rstrip('-')}.png", overlay_picture(display_image(image), result.map,
                                                                      result.signed, lines))
        return {"image": f"why/{name.rstrip('-')}.png", "lines": lines, "score": result.score}

    def looks_for(self, stage: int, channel: int, number: int | None = None) -> dict:
        """What a channel of the run's stage looks for: the image that excites it most (``cnnx features``) and its
        strongest patches among the images this session has shown.  Found in the background, once for each
        source and channel: until then the answer says how far it has come (``busy``, ``done`` of ``steps``)."""
        shown = self.shown(number)
        entries = _stages(shown.folder)
        if not 1 <= stage < len(entries) or not 0 <= channel < entries[stage]["shape"][0]:
            raise CnnxError(f"no channel {channel} of stage {stage} in this run")
        key = (id(shown.source), stage, channel)
        with self.lock:
            entry = self.looked.get(key)
            if entry is None:
                entry = self.looked[key] = {"busy": True, "done": 0, "steps": LOOKS_FOR_STEPS}
                threading.Thread(target=self._look, args=(shown, entries, stage, channel, entry), daemon=True).start()
            answer = {k: v for k, v in entry.items() if k not in ("pixels", "patches")}
        if entry.get("error"):
            with self.lock:
                del self.looked[key]  # asked again, it is tried again
            raise CnnxError(entry["error"])
        if not answer["busy"]:
            from cnnx.io.png import write_png

            folder = shown.folder / "features"
            folder.mkdir(exist_ok=True)
            name = f"stage{stage}-channel{channel}"
            write_png(folder / f"{name}.png", entry["pixels"])
            answer["image"] = f"features/{name}.png"
            if entry.get("patches") is not None:
                write_png(folder / f"{name}-patches.png", entry["patches"])
                answer["patches"] = f"features/{name}-patches.png"
        return answer

    def _look(self, shown: Run, entries: list, stage: int, channel: int, entry: dict) -> None:
        """The background work of ``looks_for``: the ascent, then the patches, one computation at a time."""
        from cnnx.explain.features import FeatureSettings, visualise
        from cnnx.render.features import tile
        from cnnx.sources.reverse import Target

        source = shown.source
        image = np.load(shown.folder / entries[0]["raw"], allow_pickle=False)
        preparation = getattr(source, "preprocess", None)
        values = (preparation.values, preparation.values_backward) if preparation is not None else None
        side = min(LOOKS_FOR_SIDE, *image.shape[1:])  # a chain's unit looks at a patch: a small image will do
        try:
            with self.computing:
                shape = image.shape if getattr(source, "any_size", None) else \
                    source.input_shape((image.shape[0], side, side))  # (a model of any size stays at its size)

                def step(done: int) -> None:
                    with self.lock:
                        entry["done"] = done

                feature = visualise(source, Target(stage=stage, channel=channel), shape,
                                    FeatureSettings(steps=LOOKS_FOR_STEPS), values, step)
                patches = self._patches(source, stage, channel)
                source.input_shape(image.shape)  # a model of any size made ready again for the run shown
            with self.lock:
                entry.update(busy=False, reached=feature.reached, start=feature.history[0],
                             pixels=tile(feature.image), patches=patches, seen=len(self.seen))
        except Exception as error:  # said to the page when it asks again
            with self.lock:
                entry.update(busy=False, error=message(error) if is_known(error) else
                             f"finding what it looks for failed ({type(error).__name__})")

    def _patches(self, source, stage: int, channel: int):
        """The channel's strongest places among the images the session has shown, as a row of patches (or None)."""
        from cnnx.explain.features import image_examples, merged_examples
        from cnnx.io.images import load_image
        from cnnx.render.features import patch_sheet

        with self.lock:
            seen = [path for path in self.seen if path.is_file()]
        found = []
        for path in seen:
            try:
                loaded = load_image(path, color=source.color, **pixel_limit(self.max_pixels))
                prepared = source.prepare(loaded.array)
                found.append(image_examples(source, path.name, prepared, stage, [channel], LOOKS_FOR_PATCHES))
            except CnnxError:
                continue  # an image that no longer reads is passed over
        if not found:
            return None
        examples = merged_examples([channel], found, LOOKS_FOR_PATCHES)
        return patch_sheet([[e[3] for e in examples.top[0]]], [f"map {channel}"])

    def value(self, stage: int, channel: int, row: int, col: int, number: int | None = None) -> dict:
        """The exact value under the pointer, from the run's raw arrays."""
        run = self.shown(number).folder
        return _value_at(run, _stages(run), stage, channel, row, col)


SEEN_KEPT = 32
LOOKS_FOR_STEPS = 96  # steps of ascent the page's "what it looks for" takes: a second or two on a small network
LOOKS_FOR_SIDE = 96  # pixels a side of the image it finds for a chain
LOOKS_FOR_PATCHES = 6  # the strongest patches shown among the images the session has shown


def _grid(weights) -> list[list[float]]:
    """A kernel sent as JSON: rows of finite numbers, all as long, at most 64 by 64."""
    numbers = (int, float)
    if not (isinstance(weights, list) and 0 < len(weights) <= 64 and all(isinstance(r, list) for r in weights)):
        raise CnnxError("a kernel is a grid of finite numbers: a list of rows")
    width = len(weights[0])
    for row in weights:
        if len(row) != width or not 0 < width <= 64:
            raise CnnxError("a kernel's rows are all as long, 1 to 64 numbers")
        if not all(isinstance(v, numbers) and not isinstance(v, bool) and math.isfinite(v) for v in row):
            raise CnnxError("a kernel is a grid of finite numbers")
    return weights


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


def shipped_samples() -> list[str]:
    """The names of the pictures shipped with cnnx."""
    from cnnx.base.choices import SAMPLES

    return sorted(path.name for path in SAMPLES.glob("*.png"))

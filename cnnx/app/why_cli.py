"""``cnnx why``: what in an image drove a network's answer, or a stage's value, drawn over the image."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from cnnx.app.shell import (
    PREPARATION,
    STAGES,
    Force,
    Jobs,
    Layers,
    MaxMemory,
    MaxPixels,
    OutFolder,
    Quiet,
    Scheduler,
    finish_batch,
    number_pair,
    pixel_limit,
    prepared,
    print_line,
    reported_errors,
    source_from,
    with_groups,
)
from cnnx.base.errors import CnnxError

Method = Annotated[str | None, typer.Option("--method", help="gradcam, gradcam++, gradient, input-x-gradient, "
                                                             "integrated-gradients, smoothgrad, occlusion; several "
                                                             "with commas, or all (default: gradcam for a network "
                                                             "that pools globally, else integrated-gradients).")]


@with_groups
def why(
    images: Annotated[list[str], typer.Argument(
            metavar="IMAGES", help="Images, folders or patterns to explain.", show_default=False)],
    stages: dict = STAGES,
    layers: Layers = None,
    preparation: dict = PREPARATION,
    method: Method = None,
    label: Annotated[str | None, typer.Option("--class", help="The class to explain, by name or index (default: "
                                                              "the top class).")] = None,
    stage: Annotated[int | None, typer.Option("--stage", min=1, help="Start from this stage instead of a class "
                                                                     "(as the pipeline's table numbers it).")] = None,
    channel: Annotated[int, typer.Option("--channel", min=0, help="With --stage: which of its maps.")] = 0,
    at: Annotated[str | None, typer.Option("--at", metavar="ROW,COL", help="With --stage: one value of the map "
                                                                          "(default: the map's sum).")] = None,
    cam_stage: Annotated[int | None, typer.Option("--cam-stage", min=1, help="Grad-CAM's stage (default: the last "
                                                                             "with a map).")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Integrated gradients' steps.")] = 32,
    samples: Annotated[int, typer.Option("--samples", min=1, help="SmoothGrad's noisy copies.")] = 16,
    noise: Annotated[float, typer.Option("--noise", min=0, help="SmoothGrad's noise, a share of the input's "
                                                                "range.")] = 0.15,
    patch: Annotated[int | None, typer.Option("--patch", min=1, help="Occlusion's square, in pixels (default: an "
                                                                     "eighth of the shorter side).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="SmoothGrad's noise.")] = 0,
    out_dir: OutFolder = None,
    save_raw: Annotated[bool, typer.Option("--save-raw", metavar="", help="Also write the map and the gradient as "
                                                                          ".npy (float32).")] = False,
    force: Force = False,
    max_memory: MaxMemory = None,
    max_pixels: MaxPixels = 0,
    jobs: Jobs = None,
    scheduler: Scheduler = None,
    quiet: Quiet = False,
) -> None:
    """Show what in the image drove a network's answer (or a stage's value), as a map over the image.

    For a classifier (--model shapes, an ONNX network) the top class by
    default, or --class; for any pipeline a --stage's --channel (its sum, or
    one value --at ROW,COL: for a chain, the value's effective receptive
    field).  Writes OUT/NAME/why/ (replacing it): for each --method,
    METHOD-overlay.png (the map over the image as the model saw it, with a
    colour bar and the answer in words) and METHOD.png (the map alone; the
    gradient method's files are named saliency);
    manifest.json; with --save-raw METHOD.npy and gradient.npy (with respect
    to the prepared input).

    Example: cnnx why samples/star.png --model shapes --method integrated-gradients
    """
    from cnnx.app.inputs import batch_destinations, default_destination
    from cnnx.app.shell import find
    from cnnx.explain.why import METHODS, WhySettings, default_method

    with reported_errors():
        place = number_pair(at, "--at")
        if (at is not None or channel) and stage is None:
            raise CnnxError("--channel and --at go with --stage")
        if stage is not None and label is not None:
            raise CnnxError("give --class or --stage, not both")

        def chosen(methods: str) -> list[WhySettings]:
            names = list(METHODS) if methods == "all" else [m.strip() for m in methods.split(",") if m.strip()]
            if not names:
                raise CnnxError("--method names no method")
            return [WhySettings(name, cam_stage, steps, samples, noise, patch, seed) for name in dict.fromkeys(names)]

        settings = chosen(method) if method is not None else None  # checked before the model is read
        source = source_from(**stages, layers=layers, preprocess=prepared(**preparation), max_memory=max_memory)
        settings = settings or chosen(default_method(source))
        root = out_dir if out_dir is not None else Path("cnnx-out")
        paths = find(images, skip=root)
        if not paths:
            raise CnnxError("give an IMAGE to explain (or a folder, or a pattern)")
        wanted = (label, stage, channel, place)
        if len(paths) == 1 and not Path(images[0]).is_dir():
            folder = out_dir if out_dir is not None else default_destination(paths[0], root)[0]
            outcome = run_why(WhyJob(paths[0], folder / "why", source, tuple(settings), wanted, save_raw, force,
                                     max_pixels))
            if outcome.error:
                raise CnnxError(outcome.error)
            for line in outcome.lines:
                print_line(line)
            return
        batch = [WhyJob(path, folder / "why", source, tuple(settings), wanted, save_raw, force, max_pixels)
                 for path, folder in zip(paths, batch_destinations(paths, root), strict=True)]
    finish_batch(batch, root, jobs, scheduler, quiet, run_why, "why")


@dataclass(frozen=True)
class WhyJob:
    """One image's ``cnnx why``: where it goes, the source, the methods and the target asked for."""

    image: Path
    destination: Path
    source: object
    methods: tuple
    wanted: tuple
    save_raw: bool = False
    force: bool = False
    max_pixels: int = 0  # 0: the default limit


@dataclass
class WhyOutcome:
    job: WhyJob
    lines: list = field(default_factory=list)
    maps: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def timings(self) -> dict[str, float]:
        return {"total": self.seconds}


def run_why(job: WhyJob) -> WhyOutcome:
    """One image's maps (a batch's work, in this process or a worker); a failure is the outcome's error."""
    import time

    from cnnx.base.errors import about

    start = time.perf_counter()
    try:
        lines, maps = _explain_one(job)
    except Exception as error:  # a batch lists every failure and goes on
        return WhyOutcome(job, error=about(job.image, error))
    return WhyOutcome(job, lines, maps, time.perf_counter() - start)


def _explain_one(job: WhyJob):
    """One image's maps, one for each method, written into its folder whole or not at all; the lines that say so,
    and how many pictures."""
    import numpy as np

    from cnnx.explain.why import class_target, explain_why, stage_target, why_lines
    from cnnx.io.images import load_image
    from cnnx.io.output import staged_folder
    from cnnx.io.png import write_png
    from cnnx.render.why import display_image, map_picture, overlay_picture

    source, path, folder, methods, save_raw, force = (job.source, job.image, job.destination, job.methods,
                                                      job.save_raw, job.force)
    label, stage, channel, place = job.wanted
    image = source.prepare(load_image(path, color=source.color, **pixel_limit(job.max_pixels)).array)
    target, what = stage_target(stage, channel, place) if stage is not None else class_target(source, image, label)
    results = [explain_why(source, image, target, settings, what) for settings in methods]
    files, records = [], []
    with staged_folder(folder, force=force) as temporary:
        for result in results:
            name = "saliency" if result.method == "gradient" else result.method  # gradient.npy is the raw gradient
            write_png(temporary / f"{name}-overlay.png", overlay_picture(display_image(image), result.map,
                                                                         result.signed, why_lines(result)),
                      atomic=False)
            write_png(temporary / f"{name}.png", map_picture(result.map, result.signed)[0], atomic=False)
            files += [f"{name}-overlay.png", f"{name}.png"]
            if save_raw:
                np.save(temporary / f"{name}.npy", result.map.astype(np.float32))
                files.append(f"{name}.npy")
            records.append({"method": result.method, "files": [f"{name}-overlay.png", f"{name}.png"],
                            "score": result.score, "stage": result.stage, "signed": result.signed,
                            "parameters": result.parameters, "check": result.check})
        gradient = next((r.gradient for r in results if r.gradient is not None), None)
        if save_raw and gradient is not None:
            np.save(temporary / "gradient.npy", gradient.astype(np.float32))
            files.append("gradient.npy")
        record = {"tool": "cnnx", "input": {"path": str(path), "shape": list(image.shape)}, "files": files,
                  "why": {"target": what, "methods": records}}
        (temporary / "manifest.json").write_text(json.dumps(record, indent=2))
    overlays = ", ".join(f for f in files if f.endswith("overlay.png"))
    return [f"why {what}: score {results[0].score:.4g}", f"wrote {overlays} and the maps alone to {folder}"], \
        sum(f.endswith(".png") for f in files)

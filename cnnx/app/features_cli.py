"""``cnnx features``: what each unit looks for, as the image that excites it most, or its top patches in photos."""

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
    pixel_limit,
    prepared,
    print_line,
    reported_errors,
    source_from,
    with_groups,
)
from cnnx.base.errors import RUNTIME_FAILURE, CnnxError


@with_groups
def features(
    images: Annotated[list[str] | None, typer.Argument(
            metavar="IMAGES", help="Photos (or folders, patterns) to find each unit's top patches in; none: draw "
                                   "what each unit looks for.", show_default=False)] = None,
    stages: dict = STAGES,
    layers: Layers = None,
    preparation: dict = PREPARATION,
    stage: Annotated[int | None, typer.Option("--stage", min=1, help="The stage whose channels to show (default: "
                                                                     "a classifier's classes).")] = None,
    channels: Annotated[str | None, typer.Option("--channels", metavar="LIST", help="Which channels (or classes): "
                                                 "0,3,5 or 0-7 (default: the first 16, or every class).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=64, help="With IMAGES: patches per unit.")] = 9,
    side: Annotated[int | None, typer.Option("--side", min=8, max=1024, help="The image's side for a pipeline or "
                                                                             "a model of any size.")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps of gradient ascent.")] = 256,
    rate: Annotated[float, typer.Option("--rate", min=0.0, help="Adam's step size.")] = 0.05,
    jitter: Annotated[int | None, typer.Option("--jitter", min=0, help="Pixels the image may shift each step "
                                                                       "(default: a sixteenth of its side).")] = None,
    rotate: Annotated[float, typer.Option("--rotate", min=0.0, help="Degrees it may turn each step.")] = 5.0,
    tv: Annotated[float, typer.Option("--tv", min=0.0, help="Total-variation penalty.")] = 0.0,
    plain: Annotated[bool, typer.Option("--plain", metavar="", help="Pixels as they are: no Fourier or "
                                                                    "decorrelated-colour parameterisation.")] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, help="The starting noise and the transformations.")] = 0,
    out_dir: OutFolder = None,
    save_raw: Annotated[bool, typer.Option("--save-raw", metavar="", help="Also write each image as .npy.")] = False,
    force: Force = False,
    max_memory: MaxMemory = None,
    max_pixels: MaxPixels = 0,
    jobs: Jobs = None,
    scheduler: Scheduler = None,
    quiet: Quiet = False,
) -> None:
    """Show what each unit of a network looks for.

    Without IMAGES: for each chosen channel of --stage (or each class of a
    classifier), the image that excites it most, found by gradient ascent
    from noise with the safeguards that keep it readable (a Fourier and
    decorrelated-colour parameterisation, random shifts, scales and turns).
    With IMAGES: each channel's top patches among them, cut to the receptive
    field.  Writes OUT (default cnnx-out/features): sheet.png, one PNG per
    unit and manifest.json with every setting.

    Example: cnnx features --model shapes --steps 128
    """
    from cnnx.explain.features import FeatureSettings

    with reported_errors():
        chosen = _units(channels, None)
        settings = FeatureSettings(steps=steps, rate=rate, jitter=jitter, rotate=rotate, fourier=not plain,
                                   decorrelate=not plain, tv=tv, seed=seed)
        source = source_from(**stages, layers=layers, preprocess=prepared(**preparation), max_memory=max_memory)
        folder = out_dir if out_dir is not None else Path("cnnx-out") / "features"
        if images:
            _top_patches(source, images, stage, chosen, top, folder, force, jobs, scheduler, quiet, max_pixels)
        else:
            _visualised(source, stage, chosen, side, settings, folder, save_raw, force)


def _units(text: str | None, default: list[int] | None) -> list[int] | None:
    """``0,3,5`` or ``0-7`` (or both, ``0-3,9``) as a list of indices; ``default`` where none is given."""
    if text is None:
        return default
    units: list[int] = []
    for part in text.split(","):
        first, dash, last = (side.strip() for side in part.partition("-"))
        if not (first.isdecimal() and (last.isdecimal() if dash else not last)) or int(last or first) < int(first):
            raise CnnxError(f"--channels takes indices and ranges, e.g. 0,3,5 or 0-7; got {text!r}")
        if len(units) + int(last or first) - int(first) >= UNITS_AT_MOST:  # before a list of them is made
            raise CnnxError(f"--channels names more than {UNITS_AT_MOST:,} units; got {text!r}")
        units += range(int(first), int(last or first) + 1)
    return list(dict.fromkeys(units))


UNITS_AT_MOST = 100_000  # more channels than any stage or classifier has


def _visualised(source, stage, channels, side, settings, folder: Path, save_raw: bool, force: bool) -> None:
    import numpy as np

    from cnnx.explain.features import visualise
    from cnnx.io.output import safe_name, staged_folder
    from cnnx.io.png import write_png
    from cnnx.render.features import feature_sheet, tile
    from cnnx.sources.reverse import Target

    shape = source.input_shape((3 if source.color else 1, side or 128, side or 128))
    classes = list(getattr(source, "classes", ()) or getattr(source, "labels", ()))
    planned = source.plan(shape)
    if stage is None:
        last = planned[-1].shape
        if not (hasattr(source, "classes") or (source.pipeline is None and last[:2] == (1, 1) and last[2] > 1)):
            raise CnnxError(f"the {source.name} classifies nothing: give a --stage (and --channels)")
        count = int(np.prod(last))
        names = classes if len(classes) == count else [f"class {k}" for k in range(count)]
        units = channels or (list(range(count)) if count <= 64 else list(range(16)))
        if max(units) >= count:
            raise CnnxError(f"--channels takes classes 0 to {count - 1} here")
        targets = [(Target(label=u), names[u]) for u in units]
    else:
        units = _stage_units(planned, stage, channels, 16)
        targets = [(Target(stage=stage, channel=u), f"stage {stage} channel {u}") for u in units]
    preparation = getattr(source, "preprocess", None)
    values = (preparation.values, preparation.values_backward) if preparation is not None else None
    found = [(name, visualise(source, target, shape, settings, values)) for target, name in targets]
    records = []
    with staged_folder(folder, force=force) as temporary:
        for k, (name, feature) in enumerate(found):
            file = f"{k:02d}_{safe_name(name)}"
            write_png(temporary / f"{file}.png", tile(feature.image), atomic=False)
            if save_raw:
                np.save(temporary / f"{file}.npy", feature.image)
            records.append({"unit": name, "file": f"{file}.png", "reached": feature.reached,
                            "start": feature.history[0], **({"raw": f"{file}.npy"} if save_raw else {})})
        captions = [[name, f"reached {feature.reached:.4g}{_probability(source, feature, target, values)}"]
                    for (name, feature), (target, _) in zip(found, targets, strict=True)]
        write_png(temporary / "sheet.png", feature_sheet([f.image for _, f in found], captions), atomic=False)
        files = ["sheet.png", *(r["file"] for r in records), *(r["raw"] for r in records if "raw" in r)]
        manifest = {"tool": "cnnx", "files": files, "features": {"source": source.title, "shape": list(shape),
                                                                 "settings": found[0][1].settings, "units": records}}
        (temporary / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for record in records:
        print_line(f"{record['unit']}: from {record['start']:.4g} to {record['reached']:.4g}")
    print_line(f"wrote sheet.png and {len(records)} images to {folder}")


def _probability(source, feature, target, values) -> str:
    """For a class: the probability the model gives it on the image found, in words; else nothing."""
    import numpy as np

    if target.label is None:
        return ""
    image = values[0](feature.image) if values else feature.image
    output = np.asarray(list(source.stream(image))[-1].array, np.float64).ravel()
    if not (np.all(output >= 0) and abs(output.sum() - 1) < 1e-3):
        output = np.exp(output - output.max()) / np.exp(output - output.max()).sum()
    return f", p {output[target.label]:.0%}"


@dataclass(frozen=True)
class PatchJob:
    """One image's share of ``cnnx features IMAGES``: its strongest places for each unit."""

    image: Path
    source: object
    stage: int
    units: tuple
    count: int
    max_pixels: int = 0  # 0: the default limit

    @property
    def destination(self) -> Path:
        return self.image


@dataclass
class PatchOutcome:
    job: PatchJob
    found: list = field(default_factory=list)
    error: str | None = None


def run_patches(job: PatchJob) -> PatchOutcome:
    """One image's entries (a batch's work, in this process or a worker); a failure is the outcome's error."""
    from cnnx.base.errors import about
    from cnnx.explain.features import image_examples
    from cnnx.io.images import load_image

    try:
        image = job.source.prepare(load_image(job.image, color=job.source.color, **pixel_limit(job.max_pixels)).array)
        return PatchOutcome(job, image_examples(job.source, str(job.image), image, job.stage, list(job.units),
                                                job.count))
    except Exception as error:  # a batch lists every failure and goes on
        return PatchOutcome(job, error=about(job.image, error))


def _planned(source, image: Path, max_pixels: int) -> list:
    """The source's stages at ``image``'s size; at 256x256 where that image cannot be read or is too small for
    them (it is listed with the failures): the stages and their channels are the same at any size that runs."""
    from cnnx.io.images import probe_image

    channels = 3 if source.color else 1
    try:
        return source.plan(source.input_shape((channels, *probe_image(image, **pixel_limit(max_pixels)))))
    except CnnxError:
        return source.plan(source.input_shape((channels, 256, 256)))


def _stage_units(planned, stage: int, channels: list[int] | None, default: int) -> list[int]:
    """The channels of ``stage`` asked for (by default its first ``default``), checked against what it has."""
    if not 1 <= stage <= len(planned):
        raise CnnxError(f"--stage takes 1 to {len(planned)}, the stages written")
    count = planned[stage - 1].shape[0]
    units = channels or list(range(min(default, count)))
    if max(units) >= count:
        raise CnnxError(f"stage {stage} has channels 0 to {count - 1}; got --channels {max(units)}")
    return units


def _top_patches(source, images, stage, channels, count: int, folder: Path, force: bool, jobs, scheduler,
                 quiet: bool, max_pixels: int) -> None:
    from cnnx.app.batches import run_batch
    from cnnx.app.shell import find, progress_bar, say
    from cnnx.explain.features import merged_examples
    from cnnx.io.output import staged_folder
    from cnnx.io.png import write_png
    from cnnx.render.features import patch_sheet

    if stage is None:
        raise CnnxError("with IMAGES, say whose channels with --stage")
    paths = find(images, skip=folder)
    if not paths:
        raise CnnxError("no images found among the IMAGES given")
    # The stage and channels asked for are checked once, at the first image's size, not refused for every image.
    units = tuple(_stage_units(_planned(source, paths[0], max_pixels), stage, channels, 8))
    batch = [PatchJob(path, source, stage, units, count, max_pixels) for path in paths]
    with progress_bar(quiet, "images") as advance:
        ended: list = []
        outcomes = run_batch(batch, processes=jobs, scheduler=scheduler, work=run_patches,
                             done=lambda outcome: (ended.append(outcome), advance(len(ended), len(batch))))
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        say(f"cnnx: error: {outcome.error}")
    if len(failed) == len(outcomes):
        raise CnnxError("no image could be read: no patches to show")
    examples = merged_examples(list(units), (o.found for o in outcomes if not o.error), count)
    names = [f"channel {u}" for u in examples.units]
    with staged_folder(folder, force=force) as temporary:
        write_png(temporary / "sheet.png", patch_sheet([[e[3] for e in row] for row in examples.top], names),
                  atomic=False)
        units_ = [{"channel": u, "top": [{"value": v, "image": n, "box": list(b)} for v, n, b, _ in row]}
                  for u, row in zip(examples.units, examples.top, strict=True)]
        manifest = {"tool": "cnnx", "files": ["sheet.png"], "features": {"source": source.title, "stage": stage,
                                                                         "images": len(paths) - len(failed),
                                                                         "units": units_}}
        (temporary / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print_line(f"the top {count} patches of {len(examples.units)} channels of stage {stage} over "
               f"{len(paths) - len(failed)} images: sheet.png in {folder}")
    if failed:  # as for any batch: the rest are written, and the exit code says not all were
        say(f"cnnx: {len(failed)} of {len(paths)} images failed")
        raise typer.Exit(RUNTIME_FAILURE)

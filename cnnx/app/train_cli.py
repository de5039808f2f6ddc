"""``cnnx train``: the lesson's network learned from a folder of your own images, one subfolder per class, and
written as an ONNX model every other command (and ONNX Runtime) runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnx.app.shell import (
    Force,
    MaxPixels,
    Quiet,
    pixel_limit,
    print_line,
    progress_bar,
    report_stop,
    reported_errors,
    say,
)
from cnnx.base.errors import CnnxError, about

if TYPE_CHECKING:  # numpy is imported where the work is, so that ``cnnx --help`` starts without it
    import numpy as np

MISCLASSIFIED_SHOWN = 36  # validation images the report draws among those the model got wrong
DEFAULT_SPEC = "conv(random:8, padding=1) -> relu -> maxpool(2) -> conv(random:16, padding=1) -> relu -> maxpool(2)"


def train(
    folder: Annotated[Path, typer.Argument(
            metavar="FOLDER", help="A folder with one subfolder of images per class (and optionally train/ and val/ "
                                   "folders laid out so).", show_default=False)],
    spec: Annotated[str, typer.Option("--spec", "-s", help="The stages to learn, before the fully connected layer "
                                                           "and softmax cnnx adds.")] = DEFAULT_SPEC,
    color: Annotated[bool, typer.Option("--color/--gray", help="Learn from colour or grey images.")] = False,
    size: Annotated[int, typer.Option("--size", min=8, max=512, help="Each image's side: the middle square, "
                                                                     "resized.")] = 32,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=10000)] = 20,
    batch: Annotated[int, typer.Option("--batch", min=1, max=4096)] = 32,
    rate: Annotated[float, typer.Option("--rate", min=1e-6, max=1.0, help="The step size.")] = 3e-3,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam, or sgd (with momentum 0.9).")] = "adam",
    val: Annotated[float, typer.Option("--val", min=0.0, max=0.9, help="The share held out for validation (where "
                                                                       "there is no val/ folder).")] = 0.2,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Epochs without a better validation loss "
                                                                    "before stopping.")] = 5,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random flips, shifts and brightness "
                                                                         "while learning.")] = True,
    strict: Annotated[bool, typer.Option("--strict", metavar="", help="Refuse a folder holding an image cnnx "
                                                                      "cannot read (by default skipped and "
                                                                      "counted).")] = False,
    max_pixels: MaxPixels = 0,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="Go on from the checkpoint an interrupted "
                                                                      "run left beside the model.")] = False,
    out: Annotated[Path, typer.Option("-o", "--out", help="The model file to write.")] = Path("cnnx-model.onnx"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Learn a network from your own images and write it as an ONNX model.

    The stages of --spec (their filters are where learning starts: random:N
    as He et al. draw them, a bank filter as it is), then a fully connected
    layer and softmax, trained by cnnx's reverse pass with Adam, light
    augmentation and early stopping on the validation loss.  Writes the model
    (--out, with its class names, for cnnx pipeline, why, serve and ONNX
    Runtime) and a report folder beside it: learning curves, the confusion
    matrix, the first layer's kernels at every epoch (and as an animation),
    every layer's kernels after each epoch, the validation images it got
    wrong.  Stopped, it keeps the
    best model so far and a checkpoint that --resume goes on from.

    Example: cnnx train photos/ --size 64 --epochs 30 -o mynet.onnx
    """
    from cnnx.io.output import checked_destination
    from cnnx.sources.learn import Network, TrainSettings, calibrate, evaluate, fit
    from cnnx.sources.onnx_export import write_onnx
    from cnnx.sources.spec import load_pipeline

    with reported_errors():
        out = Path(out)
        if out.suffix.lower() != ".onnx":
            raise CnnxError(f"{out}: the model is written as ONNX: give a name ending in .onnx")
        if optimizer not in ("adam", "sgd"):
            raise CnnxError(f"--optimizer takes adam or sgd; got {optimizer!r}")
        checkpoint = out.with_name(out.name + ".checkpoint.npz")
        if out.exists() and not force and not resume:
            raise CnnxError(f"{out}: exists; use --force to replace it")
        if checkpoint.exists() and not force and not resume:
            raise CnnxError(f"{checkpoint}: exists (a stopped run's checkpoint?); --resume goes on from it, --force "
                            "starts again")
        if not out.parent.is_dir():
            raise CnnxError(f"{out.parent}: no such folder")
        report = out.with_name(out.stem + "-report")
        checked_destination(report, force=force)  # before any training: a folder of the user's is never replaced
        pipeline = load_pipeline(spec=spec, color=color)
        classes, (train_set, val_set), skipped = read_folder(folder, size, color, val, seed, strict, max_pixels)
        if skipped:
            say(f"cnnx: note: {len(skipped)} files could not be read and were skipped, e.g. {skipped[0]}")
        network = Network.of(pipeline, train_set[0].shape[1:], classes, seed, train_set[0])
        settings = TrainSettings(epochs=epochs, batch=batch, rate=rate, patience=patience, augment=augment,
                                 seed=seed, optimizer=optimizer)
        if not quiet:
            print_line(f"cnnx train: {len(train_set[0])} images to learn from, {len(val_set[0])} to validate, "
                       f"{len(classes)} classes ({', '.join(classes)})")
        with progress_bar(quiet, "epochs") as advance:
            def told(epoch) -> None:
                _say_epoch(epoch)
                advance(epoch.number, epochs, _validated(epoch.val_accuracy))

            best, history = fit(network, train_set, val_set, settings, None if quiet else told,
                                checkpoint=checkpoint, resume=resume)
        network.params = best
        temperature = calibrate(network, *val_set)
        write_onnx(network, out)
        write_report(report, network, history, val_set, temperature, settings, force=force)
        loss, accuracy = evaluate(network, *val_set)
        kept = ": the last epoch kept, uncalibrated" if math.isnan(accuracy) else ""
        print_line(f"wrote {out} ({_validated(accuracy, loss)}{kept}) and {report}/")
        if network.stopped is not None:
            raise typer.Exit(report_stop(network.stopped, f"the best model of the {len(history)} epochs done was "
                                                          f"written whole to {out}; --resume goes on"))
        checkpoint.unlink(missing_ok=True)


def _say_epoch(epoch) -> None:
    print_line(f"epoch {epoch.number}: loss {epoch.loss:.4f}, accuracy {epoch.accuracy:.1%}; "
               f"{_validated(epoch.val_accuracy, epoch.val_loss)} ({epoch.seconds:.1f} s)")


def _validated(accuracy: float, loss: float | None = None) -> str:
    """The validation accuracy (and loss) in words; with no image held out (--val 0, or too few images), so."""
    if math.isnan(accuracy):
        return "no validation images"
    return f"validation accuracy {accuracy:.1%}" + ("" if loss is None else f", loss {loss:.4f}")


def read_folder(folder: Path, size: int, color: bool, val: float, seed: int, strict: bool, max_pixels: int = 0):
    """The class names (its subfolders), the training and validation images (N, C, size, size) with their labels,
    and the files skipped.  A ``train/`` and ``val/`` pair of folders is used as it is; otherwise a seeded share
    ``val`` of each class is held out."""
    import numpy as np

    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder of class subfolders" if folder.exists() else "no such folder"
        raise CnnxError(f"{folder}: {what}")
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        classes, train_set, skipped = _read_classes(folder / "train", size, color, strict, max_pixels)
        val_classes, val_set, more = _read_classes(folder / "val", size, color, strict, max_pixels)
        if val_classes != classes:
            raise CnnxError(f"{folder}: train/ and val/ hold different classes")
        return classes, (train_set, val_set), skipped + more
    classes, (images, labels), skipped = _read_classes(folder, size, color, strict, max_pixels)
    order = np.random.default_rng(seed).permutation(len(images))
    held = np.zeros(len(images), bool)
    for label in range(len(classes)):
        members = order[labels[order] == label]
        held[members[: int(round(val * len(members)))]] = True
    return classes, ((images[~held], labels[~held]), (images[held], labels[held])), skipped


def _read_classes(folder: Path, size: int, color: bool, strict: bool, max_pixels: int):
    import numpy as np

    from cnnx.app.inputs import IMAGE_SUFFIXES
    from cnnx.io.images import load_image

    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(subfolders) < 2:
        raise CnnxError(f"{folder}: give one subfolder of images per class, two classes at least; found "
                        f"{len(subfolders)}")
    images, labels, skipped = [], [], []
    for label, sub in enumerate(subfolders):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        count = 0
        for path in files:
            try:
                images.append(_square(load_image(path, color=color, **pixel_limit(max_pixels)).array, size))
            except CnnxError as error:
                if strict:
                    raise CnnxError(f"{about(path, error)} (without --strict it is skipped)") from None
                skipped.append(str(path))
                continue
            labels.append(label)
            count += 1
        if not count:
            raise CnnxError(f"{sub}: the class {sub.name!r} holds no image cnnx can read")
    return tuple(p.name for p in subfolders), (np.stack(images), np.array(labels)), skipped


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """The middle square of a (C, H, W) image, resized to ``size`` a side (bilinear), float32 in 0..1."""
    import numpy as np
    from PIL import Image

    C, H, W = image.shape
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    planes = [np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BILINEAR), np.float32)
              for p in image[:, top : top + side, left : left + side]]
    return np.stack(planes)


def _epoch_sheets(folder: Path, history) -> list[str]:
    """kernels/epoch-NN.png: every convolution's kernels after each epoch, each layer on one range throughout."""
    from cnnx.io.png import write_png
    from cnnx.render.training import epoch_sheet

    kept = [e for e in history if e.kernels]
    (folder / "kernels").mkdir()
    bounds = {name: max(float(abs(e.kernels[name]).max()) for e in kept) or 1.0 for name in kept[0].kernels}
    titled = {name: f"{name.removesuffix('.weight')} (stage {int(name[4:].split('.')[0]) + 1})" for name in bounds}
    names = []
    for epoch in kept:
        names.append(f"kernels/epoch-{epoch.number:0{len(str(len(history)))}d}.png")
        sheet = epoch_sheet({titled[k]: w for k, w in epoch.kernels.items()}, {titled[k]: b for k, b in bounds.items()},
                            epoch.number, len(history))
        write_png(folder / names[-1], sheet, atomic=False)
    return names


def write_report(folder: Path, network, history, val_set, temperature: float, settings, *,
                 force: bool = False) -> None:
    """The report beside the model: curves.png, kernels.png (the first convolution at every epoch) and its
    animation, kernels/epoch-NN.png (every convolution after each epoch), manifest.json (every epoch, the confusion
    matrix, the misclassified validation images).  An earlier report is replaced; another folder only if ``force``."""
    import numpy as np

    from cnnx.io.output import MANIFEST, staged_folder
    from cnnx.io.png import write_png
    from cnnx.render.features import feature_sheet
    from cnnx.render.training import curves_picture, kernels_frames, kernels_picture

    images, labels = val_set
    predicted = network.probabilities(images).argmax(axis=1) if len(images) else np.array([], int)
    confusion = np.zeros((len(network.classes),) * 2, int)
    np.add.at(confusion, (labels, predicted), 1)
    record = {
        "tool": "cnnx", "files": ["curves.png", MANIFEST],
        "training": {"classes": list(network.classes), "input": list(network.input_shape),
                     "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
                     "temperature": temperature,
                     "epochs": [{"epoch": e.number, "loss": e.loss, "accuracy": e.accuracy,
                                 "val_loss": None if math.isnan(e.val_loss) else e.val_loss,
                                 "val_accuracy": None if math.isnan(e.val_accuracy) else e.val_accuracy,
                                 "seconds": e.seconds} for e in history],
                     "confusion": confusion.tolist(),
                     "misclassified": [int(k) for k in np.nonzero(predicted != labels)[0]]},
    }
    with staged_folder(folder, force=force) as temporary:
        write_png(temporary / "curves.png", curves_picture(history), atomic=False)
        first = [next(iter(e.kernels.values())) for e in history if e.kernels]
        if first:
            write_png(temporary / "kernels.png", kernels_picture(first), atomic=False)
            frames = kernels_frames(first)
            frames[0].save(temporary / "kernels.gif", save_all=True, append_images=frames[1:], duration=500, loop=0)
            record["files"] += ["kernels.png", "kernels.gif"]
            record["files"] += _epoch_sheets(temporary, history)
        wrong = np.nonzero(predicted != labels)[0][:MISCLASSIFIED_SHOWN]
        if len(wrong):
            captions = [[f"#{k}: a {network.classes[labels[k]]}", f"taken for {network.classes[predicted[k]]}"]
                        for k in wrong]
            write_png(temporary / "misclassified.png", feature_sheet([images[k] for k in wrong], captions, 6),
                      atomic=False)
            record["files"].append("misclassified.png")
        (temporary / MANIFEST).write_text(json.dumps(record, indent=2))

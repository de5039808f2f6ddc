"""``cnnx explain``: the arithmetic of each step, shown step by step, for the lesson's example or a real image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnx.app.shell import (
    PREPARATION,
    STAGES,
    Json,
    Layers,
    MaxMemory,
    MaxPixels,
    number_pair,
    out,
    pixel_limit,
    prepared,
    reported_errors,
    source_from,
    with_groups,
)
from cnnx.base.choices import PaddingMode
from cnnx.base.errors import CnnxError

app = typer.Typer(
    name="explain",
    help="The arithmetic of each step, shown step by step: conv, relu, pool, field.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def show_explanation(data, view) -> None:
    """Print an explanation: as rich text, or as JSON with --json (view None)."""
    import json

    from cnnx.explain import as_json

    if view is not None:
        out.print(view(data))
    elif out.is_terminal:
        out.print_json(json.dumps(as_json(data)), highlight=False)
    else:
        print(json.dumps(as_json(data), indent=2))


Matrix = Annotated[
    str | None,
    typer.Option("--input", help="A small input matrix, e.g. [[1,2,1,0],[0,1,3,2]] (default: the lesson's 4x4)."),
]


@app.command("conv")
@with_groups
def explain_conv(
    image: Annotated[
        Path | None, typer.Argument(metavar="IMAGE", help="An image to take a patch from (default: the lesson's 4x4).")
    ] = None,
    matrix: Matrix = None,
    kernel_spec: Annotated[
        str, typer.Option("--kernel", "-k", help="The kernel: a name, name:param=value or a matrix.")
    ] = "vertical_edge",
    stride: Annotated[int, typer.Option("--stride", min=1, help="Step between windows (input matrices).")] = 1,
    padding: Annotated[int, typer.Option("--padding", min=0, help="Zero border around an input matrix.")] = 0,
    at: Annotated[
        str | None, typer.Option("--at", help="ROW,COL of the output pixel to explain, with an IMAGE.")
    ] = None,
    padding_mode: Annotated[
        PaddingMode, typer.Option("--padding-mode", help="Border of an IMAGE.")
    ] = PaddingMode.replicate,
    model: Annotated[str | None, typer.Option("--model", "-m", metavar="FILE.onnx",
                                              help="With an IMAGE: explain a value of this model's layer.")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="With --model: the Conv node.")] = None,
    channel: Annotated[int, typer.Option("--channel", min=0, help="With --model: which of its maps.")] = 0,
    preparation: dict = PREPARATION,
    max_memory: MaxMemory = None,
    max_pixels: MaxPixels = 0,
    as_json: Json = False,
) -> None:
    """Replay a convolution window by window: the values under the kernel, the products, the sum.

    Without arguments, the lesson's example: the 4x4 input and the vertical-edge
    filter, with where the lesson's own arithmetic went wrong.  With an ONNX
    --model and --layer, one value of a real layer: the sum over every input
    channel, plus the bias, and the value the layer holds there.

    Example: cnnx explain conv samples/chelsea.png --at 120,200 --kernel sobel_x
    """
    from cnnx import explain
    from cnnx.explain import views as explain_view
    from cnnx.io.images import load_image
    from cnnx.sources.kernels import parse_kernel

    with reported_errors():
        kernel = parse_kernel(kernel_spec)
        if image is not None:
            if at is None:
                raise CnnxError("with an IMAGE, say which output pixel with --at ROW,COL")
            row, col = number_pair(at, "--at")
            if model is not None:
                if layer is None:
                    raise CnnxError("with --model, say which Conv node with --layer NAME")
                preparation = prepared(**preparation)
                source = source_from(None, None, None, model, None, None, preprocess=preparation,
                                     max_memory=max_memory)
                if source.pipeline is not None:
                    raise CnnxError("explain conv --model takes an ONNX model (FILE.onnx)")
                _refuse_over_budget(image, source, max_memory, max_pixels)
                model_input = source.prepare(load_image(image, color=source.color, **pixel_limit(max_pixels)).array)
                data = explain.explain_layer(source, model_input, layer, channel, row, col)
                show_explanation(data, None if as_json else explain_view.layer_view)
                return
            _refuse_over_budget(image, None, max_memory, max_pixels)
            patch = load_image(image, **pixel_limit(max_pixels)).array
            data = explain.explain_patch(patch, str(image), kernel, row, col, padding_mode)
            show_explanation(data, None if as_json else explain_view.patch_view)
            return
        values = explain.parse_matrix(matrix) if matrix else explain.lesson_input()
        data = explain.explain_conv(values, kernel, stride=stride, padding=padding)
        show_explanation(data, None if as_json else explain_view.conv_view)


@app.command("value")
@with_groups
def explain_value(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The image to run.")],
    stage: Annotated[int, typer.Option("--stage", min=1, help="Which stage, as the pipeline's table numbers it.")] = 1,
    channel: Annotated[int, typer.Option("--channel", min=0, help="Which of the stage's maps.")] = 0,
    at: Annotated[str | None, typer.Option("--at", metavar="ROW,COL", help="The value's place in its map.")] = None,
    stages: dict = STAGES,
    layers: Layers = None,
    preparation: dict = PREPARATION,
    max_memory: MaxMemory = None,
    max_pixels: MaxPixels = 0,
    as_json: Json = False,
) -> None:
    """Show how any one value of any stage was computed, from the stage before (or, in an ONNX network, from the
    layer's own inputs), and that it equals the value the stage holds: the arithmetic cnnx serve shows on a click.

    Example: cnnx explain value samples/chelsea.png --stage 4 --channel 1 --at 40,60
    """
    from cnnx import explain
    from cnnx.explain import views as explain_view
    from cnnx.io.images import load_image

    with reported_errors():
        if at is None:
            raise CnnxError("say which value with --at ROW,COL (and --stage, --channel)")
        row, col = number_pair(at, "--at")
        preparation = prepared(**preparation)
        source = source_from(**stages, layers=layers, preprocess=preparation, max_memory=max_memory)
        _refuse_over_budget(image, source, max_memory, max_pixels)
        results = explain.every_stage(source, load_image(image, color=source.color, **pixel_limit(max_pixels)).array)
        if stage >= len(results):
            raise CnnxError(f"there are stages 1 to {len(results) - 1}; got --stage {stage}")
        shape = results[stage].shape
        if not (channel < shape[0] and row < shape[1] and col < shape[2]):
            raise CnnxError(f"stage {stage} has {shape[0]} maps of {shape[1]}x{shape[2]}: --channel 0..{shape[0] - 1},"
                            f" --at within 0..{shape[1] - 1}, 0..{shape[2] - 1}; got {channel} at {row},{col}")
        data = explain.explain_stage(source, stage, channel, row, col, lambda k: results[k].array)
        view = explain_view.layer_view if isinstance(data, explain.LayerExplanation) else explain_view.value_view
        show_explanation(data, None if as_json else view)


@app.command("relu")
@with_groups
def explain_relu(
    image: Annotated[Path | None, typer.Argument(
            metavar="IMAGE", help="An image: values before and after a ReLU stage.")] = None,
    stage: Annotated[int, typer.Option("--stage", help="Which stage (a relu) to look at.")] = 2,
    stages: dict = STAGES,
    max_memory: MaxMemory = None,
    max_pixels: MaxPixels = 0,
    as_json: Json = False,
) -> None:
    """Show ReLU, max(0, x): on the lesson's -10..10, or on a real image's feature maps as a histogram.

    Example: cnnx explain relu samples/chelsea.png --stage 2
    """
    from cnnx import explain
    from cnnx.explain import views as explain_view
    from cnnx.io.images import load_image

    with reported_errors():
        if image is None:
            data = explain.explain_relu()
        else:
            source = source_from(**stages, max_memory=max_memory)
            _refuse_over_budget(image, source, max_memory, max_pixels)
            loaded = load_image(image, color=source.color, **pixel_limit(max_pixels)).array
            data = explain.explain_relu_image(loaded, source, stage)
        show_explanation(data, None if as_json else explain_view.relu_view)


@app.command("pool")
@with_groups
def explain_pool(
    image: Annotated[Path | None, typer.Argument(
            metavar="IMAGE", help="An image: measure how pooling tolerates small shifts.")] = None,
    matrix: Matrix = None,
    size: Annotated[int, typer.Option("--size", min=1, help="Window size.")] = 2,
    stride: Annotated[
        int | None, typer.Option("--stride", min=1, help="Step between windows (default: the size).")
    ] = None,
    shifts: Annotated[
        int, typer.Option("--shifts", min=1, max=32, help="With an IMAGE: shift by 1, 2, ... pixels.")
    ] = 4,
    stages: dict = STAGES,
    max_memory: MaxMemory = None,
    max_pixels: MaxPixels = 0,
    as_json: Json = False,
) -> None:
    """Show pooling window by window, or measure on an image how much each stage tolerates a small shift.

    Example: cnnx explain pool samples/chelsea.png --shifts 4
    """
    from cnnx import explain
    from cnnx.explain import views as explain_view
    from cnnx.io.images import load_image

    with reported_errors():
        if image is not None:
            source = source_from(**stages, max_memory=max_memory)
            _refuse_over_budget(image, source, max_memory, max_pixels, copies=shifts + 1)
            loaded = load_image(image, color=source.color, **pixel_limit(max_pixels))
            data = explain.shift_tolerance(loaded.array, str(image), source, list(range(1, shifts + 1)))
            show_explanation(data, None if as_json else explain_view.shift_view)
            return
        values = explain.parse_matrix(matrix) if matrix else explain.lesson_input()
        show_explanation(explain.explain_pool(values, size, stride), None if as_json else explain_view.pool_view)


@app.command("field")
@with_groups
def explain_field(
    image: Annotated[Path | None, typer.Argument(
            metavar="IMAGE", help="An image whose size to use (default: 256x256).")] = None,
    stages: dict = STAGES,
    max_pixels: MaxPixels = 0,
    as_json: Json = False,
) -> None:
    """Show how the receptive field grows stage by stage: deeper layers see larger patterns.

    Example: cnnx explain field --preset random
    """
    from cnnx import explain
    from cnnx.explain import views as explain_view
    from cnnx.io.images import probe_image

    with reported_errors():
        source = source_from(**stages)
        size = probe_image(image, **pixel_limit(max_pixels)) if image is not None else (256, 256)
        data = explain.explain_field(source, (3 if source.color else 1, *size))
        show_explanation(data, None if as_json else explain_view.field_view)


def _refuse_over_budget(image: Path, source, max_memory: str | None, max_pixels: int, *, copies: int = 1) -> None:
    """Refuse, from the header alone, an image over the pixel limit or an explanation that would need more memory
    than the budget."""
    from cnnx.app.memory import memory_to_keep_all, parse_bytes, refuse_over_budget
    from cnnx.base.errors import about

    budget = parse_bytes(max_memory) if max_memory else None
    try:
        refuse_over_budget(memory_to_keep_all(image, source, copies=copies, **pixel_limit(max_pixels)), budget)
    except CnnxError as error:
        raise CnnxError(about(image, error)) from None

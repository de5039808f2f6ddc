"""The pipeline spec language, pipeline TOML files, and the presets.

A spec is stages joined by ``->``::

    conv(vertical_edge, sobel_x@, gaussian:sigma=2; padding=same) -> relu -> maxpool(2)
    -> conv(random:8; seed=0) -> leaky_relu(0.1) -> avgpool(3, stride=2)

A stage is a name with optional arguments in parentheses: values first (for
conv, its filter specs; for pooling, the window size; for leaky_relu, the
slope), then ``key=value`` options; ``,`` or ``;`` separate them.  A TOML
file holds the same stages, one ``[[stage]]`` table each, plus ``color`` and
``convention``; ``to_toml`` writes what ``from_toml`` reads back unchanged.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cnnx.errors import CnnxError
from cnnx.kernels import parse_filters
from cnnx.pipeline import (
    ACTIVATIONS,
    LESSON,
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Pipeline,
    Pool,
    Softmax,
    Stage,
)

__all__ = ["PRESETS", "SpecError", "from_toml", "load_pipeline", "parse_spec", "preset", "to_toml"]

_OPENERS, _CLOSERS = "([", ")]"


class SpecError(CnnxError):
    """A spec that cannot be read: the message, then the spec with a caret under the place."""

    def __init__(self, message: str, spec: str, position: int):
        self.position = position
        super().__init__(f"{message}\n  {spec}\n  {' ' * position}^")


@dataclass(frozen=True)
class _Piece:
    text: str
    start: int  # offset of text in the whole spec


def _split(piece: _Piece, separators: tuple[str, ...], spec: str) -> list[_Piece]:
    """Split at separators outside brackets; an unbalanced bracket is a SpecError at its place."""
    parts, depth, begin, k = [], [], 0, 0
    text = piece.text
    while k < len(text):
        char = text[k]
        if char in _OPENERS:
            depth.append((char, k))
        elif char in _CLOSERS:
            if not depth or _OPENERS.index(depth[-1][0]) != _CLOSERS.index(char):
                raise SpecError(f"unexpected {char!r}", spec, piece.start + k)
            depth.pop()
        elif not depth:
            separator = next((s for s in separators if text.startswith(s, k)), None)
            if separator:
                parts.append(_Piece(text[begin:k], piece.start + begin))
                begin = k = k + len(separator)
                continue
        k += 1
    if depth:
        char, at = depth[-1]
        raise SpecError(f"{char!r} is never closed; expected {_CLOSERS[_OPENERS.index(char)]!r}", spec, piece.start + at)
    parts.append(_Piece(text[begin:], piece.start + begin))
    return parts


def _stripped(piece: _Piece) -> _Piece:
    lead = len(piece.text) - len(piece.text.lstrip())
    return _Piece(piece.text.strip(), piece.start + lead)


_STAGE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_OPTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", re.DOTALL)
STAGE_NAMES = ("conv", *ACTIVATIONS, "maxpool", "avgpool", "global_avgpool", "flatten", "dense", "softmax")


def parse_spec(spec: str) -> tuple[Stage, ...]:
    """The stages a spec describes; a SpecError points at the first place that cannot be read.

    Examples
    --------
    >>> [s.to_spec() for s in parse_spec("conv(sobel_x; padding=1) -> relu -> maxpool(2, stride=1)")]
    ['conv(sobel_x; padding=1)', 'relu', 'maxpool(2, stride=1)']
    """
    if not spec.strip():
        raise SpecError("the spec is empty; expected stages such as conv(sobel_x) -> relu -> maxpool(2)", spec, 0)
    return tuple(_parse_stage(_stripped(piece), spec) for piece in _split(_Piece(spec, 0), ("->",), spec))


def _parse_stage(piece: _Piece, spec: str) -> Stage:
    if not piece.text:
        raise SpecError("expected a stage here", spec, piece.start)
    match = _STAGE.fullmatch(piece.text)
    if match is None:
        head = re.match(r"[A-Za-z_][A-Za-z0-9_]*\s*", piece.text)
        if head is None:
            raise SpecError("expected a stage name such as conv, relu or maxpool", spec, piece.start)
        rest = piece.text[head.end() :]
        where = piece.start + head.end() + (rest.index(")") + 1 if rest.startswith("(") and ")" in rest else 0)
        raise SpecError("expected '->' between stages", spec, where)
    name = match.group(1)
    if name not in STAGE_NAMES:
        close = difflib.get_close_matches(name, STAGE_NAMES, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else f"stages are {', '.join(STAGE_NAMES)}"
        raise SpecError(f"unknown stage {name!r}; {hint}", spec, piece.start)
    values, options = [], {}
    if match.group(2) is not None:
        inner = _Piece(match.group(2), piece.start + match.start(2))
        for item in map(_stripped, _split(inner, (",", ";"), spec)):
            if not item.text:
                if match.group(2).strip():
                    raise SpecError("expected a value here", spec, item.start)
                continue
            option = _OPTION.fullmatch(item.text)
            if option and ":" not in option.group(1):
                if option.group(1) in options:
                    raise SpecError(f"{option.group(1)} is given twice", spec, item.start)
                options[option.group(1)] = _Piece(option.group(2).strip(), item.start + option.start(2))
            else:
                values.append(item)
    try:
        return _build(name, values, options, spec)
    except SpecError:
        raise
    except CnnxError as error:
        raise SpecError(str(error), spec, piece.start) from None


def _parse_number(piece: _Piece, kind, spec: str, minimum=None):
    try:
        value = kind(piece.text)
    except ValueError:
        raise SpecError(f"expected {'a whole number' if kind is int else 'a number'}, got {piece.text!r}", spec, piece.start) from None
    if minimum is not None and value < minimum:
        raise SpecError(f"expected a number >= {minimum}, got {piece.text!r}", spec, piece.start)
    return value


def _build(name: str, values: list[_Piece], options: dict[str, _Piece], spec: str) -> Stage:
    """One stage from its parsed values and options, each checked where it stands."""
    schema = {
        "conv": {"padding": None, "padding_mode": str, "stride": int, "dilation": int, "combine": str, "bias": float, "seed": int},
        "leaky_relu": {"slope": float},
        "maxpool": {"size": int, "stride": int, "padding": int},
        "avgpool": {"size": int, "stride": int, "padding": int},
    }.get(name, {})
    for key, piece in options.items():
        if key not in schema:
            takes = ", ".join(schema) or "no options"
            raise SpecError(f"{name} takes {takes}; got {key!r}", spec, piece.start - len(key) - 1)
    parsed = {}
    for key, piece in options.items():
        kind = schema[key]
        if kind is None:  # padding: a number or same/valid
            parsed[key] = piece.text if piece.text in ("same", "valid") else _parse_number(piece, int, spec, 0)
        elif kind is str:
            parsed[key] = piece.text
        else:
            parsed[key] = _parse_number(piece, kind, spec, 1 if key in ("stride", "dilation", "size") else 0 if key != "bias" else None)
    if name == "conv":
        if not values:
            raise SpecError("conv needs at least one filter, e.g. conv(sobel_x)", spec, options and min(p.start for p in options.values()) or 0)
        for piece in values:
            try:
                parse_filters(piece.text)
            except CnnxError as error:
                raise SpecError(str(error), spec, piece.start) from None
        return Conv(tuple(piece.text for piece in values), **parsed)
    if name == "dense":
        if len(values) != 1:
            raise SpecError("dense takes one value, its weights, e.g. dense(model:shapes:fc)", spec,
                            values[1].start if values else 0)
        try:
            return Dense(values[0].text)
        except CnnxError as error:
            raise SpecError(str(error), spec, values[0].start) from None
    if name in ("maxpool", "avgpool"):
        if len(values) > 1:
            raise SpecError(f"{name} takes one value, the window size", spec, values[1].start)
        if values:
            if "size" in parsed:
                raise SpecError("the window size is given twice", spec, values[0].start)
            parsed["size"] = _parse_number(values[0], int, spec, 1)
        return Pool(name[:3], **parsed)
    if name == "leaky_relu":
        if len(values) > 1 or (values and "slope" in parsed):
            raise SpecError("leaky_relu takes one value, the slope", spec, values[-1].start)
        if values:
            parsed["slope"] = _parse_number(values[0], float, spec)
        return Activation("leaky_relu", **parsed)
    if values:
        raise SpecError(f"{name} takes no values", spec, values[0].start)
    return {"global_avgpool": GlobalAvgPool, "flatten": Flatten, "softmax": Softmax}.get(name, lambda: Activation(name))()


# ---------------------------------------------------------------- TOML


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(pipeline: Pipeline) -> str:
    """The pipeline as a TOML file that ``from_toml`` reads back to the same pipeline."""
    lines = [
        "# cnnx pipeline: cnnx pipeline IMAGE --config THIS-FILE",
        f"# spec: {pipeline.to_spec()}",
        f"color = {_toml_value('rgb' if pipeline.color else 'gray')}",
        f"convention = {_toml_value(pipeline.convention)}",
    ]
    for stage in pipeline.stages:
        lines += ["", "[[stage]]"] + [f"{key} = {_toml_value(value)}" for key, value in stage.to_table().items()]
    return "\n".join(lines) + "\n"


def from_toml(text: str, where: str = "pipeline file") -> Pipeline:
    """Read a pipeline TOML file; errors name the file, the stage and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CnnxError(f"{where}: not valid TOML ({error})") from None
    unknown = set(data) - {"color", "convention", "stage"}
    if unknown:
        raise CnnxError(f"{where}: unknown key {sorted(unknown)[0]!r}; a pipeline file has color, convention and [[stage]] tables")
    color = data.get("color", "gray")
    if color not in ("gray", "rgb"):
        raise CnnxError(f"{where}: color must be \"gray\" or \"rgb\"; got {color!r}")
    tables = data.get("stage", [])
    if not isinstance(tables, list) or not tables:
        raise CnnxError(f"{where}: no stages; add [[stage]] tables, e.g. op = \"conv\"")
    stages = []
    for index, table in enumerate(tables, 1):
        try:
            stages.append(_stage_from_table(dict(table)))
        except CnnxError as error:
            raise CnnxError(f"{where}: stage {index}: {error}") from None
    return Pipeline(tuple(stages), color == "rgb", data.get("convention", "correlation"))


def _stage_from_table(table: dict) -> Stage:
    op = table.pop("op", None)
    if op not in STAGE_NAMES:
        raise CnnxError(f"op must be one of {', '.join(STAGE_NAMES)}; got {op!r}")
    kinds = {
        "conv": {"filters": list, "padding": (int, str), "padding_mode": str, "stride": int, "dilation": int,
                 "combine": str, "bias": (int, float), "seed": int},
        "leaky_relu": {"slope": (int, float)},
        "maxpool": {"size": int, "stride": int, "padding": int},
        "avgpool": {"size": int, "stride": int, "padding": int},
        "dense": {"weights": str},
    }.get(op, {})
    for key, value in table.items():
        if key not in kinds:
            raise CnnxError(f"{op} takes {', '.join(kinds) or 'no keys but op'}; got {key!r}")
        if not isinstance(value, kinds[key]) or isinstance(value, bool):
            raise CnnxError(f"{op}: {key} has the wrong type: {value!r}")
    if op == "conv":
        if "filters" not in table or not all(isinstance(f, str) for f in table["filters"]):
            raise CnnxError("conv needs filters = [\"name\", ...]")
        filters = tuple(table.pop("filters"))
        return Conv(filters, **{k: float(v) if k == "bias" else v for k, v in table.items()})
    if op in ("maxpool", "avgpool"):
        return Pool(op[:3], **table)
    if op == "dense":
        if "weights" not in table:
            raise CnnxError('dense needs weights = "model:NAME:LAYER" or a file')
        return Dense(table["weights"])
    if op in ("global_avgpool", "flatten", "softmax"):
        return {"global_avgpool": GlobalAvgPool, "flatten": Flatten, "softmax": Softmax}[op]()
    return Activation(op, **{k: float(v) for k, v in table.items()})


# ---------------------------------------------------------------- presets

PRESETS: dict[str, tuple[str, str]] = {
    "lesson": (
        "The lesson's flow, twice: edges in 4 directions, then centre-surround on each (the default)",
        Pipeline(LESSON).to_spec(),
    ),
    "edges": (
        "One 3x3 Sobel filter turned through 8 directions, 45 degrees apart, then relu and 2x2 max pooling",
        "conv(sobel_x@; padding_mode=replicate) -> relu -> maxpool(2)",
    ),
    "pyramid": (
        "A blur pyramid: Gaussian blur and 2x2 average pooling, three times",
        "conv(gaussian:sigma=1; padding_mode=replicate) -> avgpool(2)"
        " -> conv(gaussian:sigma=1; padding_mode=replicate) -> avgpool(2)"
        " -> conv(gaussian:sigma=1; padding_mode=replicate) -> avgpool(2)",
    ),
    "random": (
        "An untrained CNN: He-initialised random 3x3 filters, 8 then 16, each round relu and max pooling",
        "conv(random:8; seed=0) -> relu -> maxpool(2) -> conv(random:16; seed=1) -> relu -> maxpool(2)",
    ),
}


def preset(name: str) -> tuple[Stage, ...]:
    """The stages of a named preset; an unknown name suggests the closest."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else "'cnnx presets' lists them"
        raise CnnxError(f"unknown preset {name!r}; {hint}")
    return parse_spec(PRESETS[name][1])


def load_pipeline(
    *, spec: str | None = None, config: Path | None = None, preset_name: str | None = None,
    color: bool | None = None, convention: str | None = None,
) -> Pipeline:
    """The pipeline a command line asks for: at most one of spec, config file and preset (the lesson by default).

    ``color`` and ``convention``, when given, override the file's settings.
    """
    if sum(x is not None for x in (spec, config, preset_name)) > 1:
        raise CnnxError("give only one of --spec, --config and --preset")
    if config is not None:
        try:
            text = Path(config).read_text()
        except OSError as error:
            raise CnnxError(f"{config}: cannot read ({error.strerror or error})") from None
        base = from_toml(text, str(config))
    else:
        stages = parse_spec(spec) if spec is not None else preset(preset_name or "lesson")
        base = Pipeline(stages)
    return Pipeline(
        base.stages,
        base.color if color is None else color,
        base.convention if convention is None else convention,
    )

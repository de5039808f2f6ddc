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
import math
import re
import tomllib
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from cnnx.base.errors import CnnxError
from cnnx.base.files import read_regular
from cnnx.sources.kernels import RandomBank, parse_filters
from cnnx.sources.stages import KINDS, LESSON, Kind, Pipeline, Stage

__all__ = [
    "PIPELINE_PRESETS",
    "SpecError",
    "from_toml",
    "load_pipeline",
    "parse_spec",
    "pipeline_text",
    "preset",
    "stage_table",
    "stage_text",
    "to_toml",
]

_OPENERS, _CLOSERS = "([", ")]"
CONFIG_LIMIT = 1 << 20  # bytes a pipeline file may take: thousands of stages' worth


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
        raise SpecError(
            f"{char!r} is never closed; expected {_CLOSERS[_OPENERS.index(char)]!r}", spec, piece.start + at
        )
    parts.append(_Piece(text[begin:], piece.start + begin))
    return parts


def _stripped(piece: _Piece) -> _Piece:
    lead = len(piece.text) - len(piece.text.lstrip())
    return _Piece(piece.text.strip(), piece.start + lead)


_STAGE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_OPTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", re.DOTALL)
STAGE_NAMES = tuple(KINDS)


def parse_spec(spec: str) -> tuple[Stage, ...]:
    """The stages a spec describes; a SpecError points at the first place that cannot be read.

    Examples
    --------
    >>> [stage_text(s) for s in parse_spec("conv(sobel_x; padding=1) -> relu -> maxpool(2, stride=1)")]
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


def _parse_number(piece: _Piece, kind, spec: str, low=None):
    try:
        value = kind(piece.text)
    except ValueError:
        raise SpecError(
            f"expected {'a whole number' if kind is int else 'a number'}, got {piece.text!r}", spec, piece.start
        ) from None
    if kind is float and not math.isfinite(value):
        raise SpecError(f"expected a finite number, got {piece.text!r}", spec, piece.start)
    if low is not None and value < low:
        raise SpecError(f"expected a number >= {low}, got {piece.text!r}", spec, piece.start)
    return value


def _parse_value(kind: Kind, key: str, piece: _Piece, spec: str):
    """One option's text as its field's type: a number, a word, or (conv's padding) either."""
    wanted = kind.options[key]
    if wanted is str or (piece.text in ("same", "valid") and str in typing.get_args(wanted)):
        return piece.text
    number = float if wanted is float else int
    return _parse_number(piece, number, spec, kind.low(key))


def _build(name: str, values: list[_Piece], options: dict[str, _Piece], spec: str) -> Stage:
    """One stage from its parsed values and options, each checked where it stands."""
    kind = KINDS[name]
    takes = [key for key in kind.options if not (kind.many and key == kind.value)]
    for key, piece in options.items():
        if key not in takes:
            raise SpecError(
                f"{name} takes {', '.join(takes) or 'no options'}; got {key!r}", spec, piece.start - len(key) - 1
            )
    parsed = {key: _parse_value(kind, key, piece, spec) for key, piece in options.items()}
    if kind.many:
        return _build_bank(name, kind, values, options, parsed, spec)
    if values and kind.value is None:
        raise SpecError(f"{name} takes no values", spec, values[0].start)
    if len(values) > 1 or (values and kind.value in parsed):
        what = (
            "its weights, e.g. dense(model:shapes:fc)" if kind.value == "weights" else f"the {_VALUE_NAMES[kind.value]}"
        )
        raise SpecError(f"{name} takes one value, {what}", spec, values[-1].start)
    if values:
        parsed[kind.value] = _parse_value(kind, kind.value, values[0], spec)
    elif kind.value is not None and kind.required(kind.value):
        raise CnnxError(f"{name} needs a value, its {_VALUE_NAMES[kind.value]}")
    return kind.make(**parsed)


def _build_bank(name: str, kind, values: list[_Piece], options: dict[str, _Piece], parsed: dict, spec: str) -> Stage:
    """A stage of many filters (a conv): at least one, each a filter the bank can read, its error placed on it."""
    if not values:
        where = min((p.start for p in options.values()), default=0)
        raise SpecError(f"{name} needs at least one filter, e.g. {name}(sobel_x)", spec, where)
    for piece in values:
        try:
            parse_filters(piece.text)
        except CnnxError as error:
            raise SpecError(str(error), spec, piece.start) from None
    return kind.make(**{kind.value: tuple(piece.text for piece in values)}, **parsed)


_VALUE_NAMES = {"size": "window size", "slope": "slope", "weights": "weights"}


# ---------------------------------------------------------------- printing


def _changed(stage: Stage, kind: Kind) -> dict:
    """The stage's options (its value field first) that differ from their defaults, or have none; and a random
    filter's seed always, since the filters are its draw."""
    random = any(isinstance(source, RandomBank) for source in getattr(stage, "sources", ()))
    out = {}
    for f in fields(stage):
        if f.name in kind.options and (
            f.name == kind.value or f.default is MISSING or getattr(stage, f.name) != f.default
            or (f.name == "seed" and random)
        ):
            out[f.name] = getattr(stage, f.name)
    if kind.value in out:
        out = {kind.value: out.pop(kind.value), **out}
    return out


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def stage_text(stage: Stage) -> str:
    """A stage in the spec language: ``conv(sobel_x; padding=1)``, ``maxpool(2, stride=1)``, ``relu``.

    Examples
    --------
    >>> stage_text(parse_spec("avgpool(3, stride=2)")[0])
    'avgpool(3, stride=2)'
    """
    kind = KINDS[stage.name]
    options = _changed(stage, kind)
    value = options.pop(kind.value, None)
    values = list(value) if kind.many else [] if value is None else [value]
    parts = [", ".join(_text(v) for v in values), ", ".join(f"{key}={_text(v)}" for key, v in options.items())]
    inside = ("; " if kind.many else ", ").join(part for part in parts if part)
    return f"{stage.name}({inside})" if inside else stage.name


def stage_table(stage: Stage) -> dict:
    """A stage as a TOML table: its op, its values and every option that differs from its default."""
    kind = KINDS[stage.name]
    return {"op": stage.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in _changed(stage, kind).items()}}


def pipeline_text(pipeline: Pipeline) -> str:
    """The stages in the spec language, joined by ``->`` (colour and convention are options of their own)."""
    return " -> ".join(stage_text(stage) for stage in pipeline.stages)


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
        f"# spec: {pipeline_text(pipeline)}",
        f"color = {_toml_value('rgb' if pipeline.color else 'gray')}",
        f"convention = {_toml_value(pipeline.convention)}",
    ]
    for stage in pipeline.stages:
        lines += ["", "[[stage]]"] + [f"{key} = {_toml_value(value)}" for key, value in stage_table(stage).items()]
    return "\n".join(lines) + "\n"


def from_toml(text: str, where: str = "pipeline file") -> Pipeline:
    """Read a pipeline TOML file; errors name the file, the stage and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CnnxError(f"{where}: not valid TOML ({error})") from None
    except RecursionError:
        raise CnnxError(f"{where}: nested too deep to be a pipeline file") from None
    unknown = set(data) - {"color", "convention", "stage"}
    if unknown:
        raise CnnxError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; a pipeline file has color, convention and [[stage]] tables"
        )
    color = data.get("color", "gray")
    if color not in ("gray", "rgb"):
        raise CnnxError(f'{where}: color must be "gray" or "rgb"; got {color!r}')
    tables = data.get("stage", [])
    if not isinstance(tables, list) or not tables:
        raise CnnxError(f'{where}: no stages; add [[stage]] tables, e.g. op = "conv"')
    stages = []
    for index, table in enumerate(tables, 1):
        try:
            if not isinstance(table, dict):
                raise CnnxError(f'a stage is a [[stage]] table with op = "..."; got {table!r}')
            stages.append(_stage_from_table(dict(table)))
        except CnnxError as error:
            raise CnnxError(f"{where}: stage {index}: {error}") from None
    return Pipeline(tuple(stages), color == "rgb", data.get("convention", "correlation"))


def _stage_from_table(table: dict) -> Stage:
    op = table.pop("op", None)
    if not isinstance(op, str) or op not in KINDS:
        raise CnnxError(f"op must be one of {', '.join(KINDS)}; got {op!r}")
    kind = KINDS[op]
    for key, value in table.items():
        if key not in kind.options:
            raise CnnxError(f"{op} takes {', '.join(kind.options) or 'no keys but op'}; got {key!r}")
        if not _has_type(value, kind.options[key]):
            raise CnnxError(f"{op}: {key} has the wrong type: {value!r}")
    if kind.many:
        if kind.value not in table or not all(isinstance(f, str) for f in table[kind.value]):
            raise CnnxError(f'{op} needs {kind.value} = ["name", ...]')
        table[kind.value] = tuple(table[kind.value])
    elif kind.value is not None and kind.value not in table and kind.required(kind.value):
        raise CnnxError(f"{op} needs {kind.value}")
    return kind.make(**{k: float(v) if kind.options[k] is float else v for k, v in table.items()})


def _has_type(value, wanted) -> bool:
    """Whether a TOML value fits a field's type (a whole number fits a float; a bool is no number)."""
    if isinstance(value, bool):
        return False
    allowed = typing.get_args(wanted) or (wanted,)
    if float in allowed:
        allowed = (*allowed, int)
    if tuple[str, ...] == wanted:
        allowed = (list,)
    return isinstance(value, tuple(t for t in allowed if isinstance(t, type)))


# ---------------------------------------------------------------- presets

PIPELINE_PRESETS: dict[str, tuple[str, str]] = {
    "lesson": (
        "The lesson's flow, twice: edges in 4 directions, then centre-surround on each (the default)",
        pipeline_text(Pipeline(LESSON)),
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
    if name not in PIPELINE_PRESETS:
        close = difflib.get_close_matches(name, PIPELINE_PRESETS, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else "'cnnx presets' lists them"
        raise CnnxError(f"unknown preset {name!r}; {hint}")
    return parse_spec(PIPELINE_PRESETS[name][1])


def load_pipeline(
    *,
    spec: str | None = None,
    config: Path | None = None,
    preset_name: str | None = None,
    color: bool | None = None,
    convention: str | None = None,
) -> Pipeline:
    """The pipeline a command line asks for: at most one of spec, config file and preset (the lesson by default).

    ``color`` and ``convention``, when given, override the file's settings.
    """
    if sum(x is not None for x in (spec, config, preset_name)) > 1:
        raise CnnxError("give only one of --spec, --config and --preset")
    if config is not None:
        data = read_regular(Path(config), "a pipeline file", limit=CONFIG_LIMIT)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CnnxError(f"{config}: not a text file in UTF-8, as a pipeline file must be") from None
        base = from_toml(text, str(config))
    else:
        stages = parse_spec(spec) if spec is not None else preset(preset_name or "lesson")
        base = Pipeline(stages)
    return Pipeline(
        base.stages,
        base.color if color is None else color,
        base.convention if convention is None else convention,
    )

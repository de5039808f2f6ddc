"""Reading an ONNX file from a stranger and making its graph ready: tensors from its own folder only, every size
checked before use, shapes worked out before any image, scales and shifts folded into convolutions.

A model file is untrusted input.  Every tensor it holds (initializers,
sparse initializers, ``Constant`` values and any other tensor attribute, in
subgraphs too) may say that its bytes live in another file; ``resolve_tensors``
reads such bytes through one function, ``external_bytes``, which accepts only
a regular file inside the model's own folder and a byte range inside that
file.  Each tensor's declared shape is then checked against the bytes it
holds, so a tensor that claims 10^11 values in 36 bytes is refused before
anything is allocated.  After this, nothing that reads the model (the onnx
package's helpers included) can reach another file.  ``load_graph`` then
checks the graph, works out every value's shape from the input's fixed size
(the small values that depend on shapes alone are computed once, here), and
folds each batch normalisation (or constant scale and shift per channel) that
follows a convolution into its weights.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cnnx.base.errors import CnnxError, printable
from cnnx.base.files import open_regular, read_regular
from cnnx.sources.graph import Graph, Node
from cnnx.sources.onnx_ops import OPS, SUPPORTED, resize_taps, run_checked, run_node
from cnnx.sources.prepare import Preparation, preparation

Shape = tuple[int, ...]

__all__ = ["MODEL_LIMIT", "OPSETS", "check_nodes", "check_opset", "check_structure", "external_bytes",
           "load_graph", "resolve_tensors"]

MODEL_LIMIT = 2 << 30  # bytes a model file, and all the weight files it names, may take
OPSETS = range(7, 24)  # the ONNX opsets cnnx's ops were checked against (tests: 9 to 23; the light models: 9)


def every_tensor(graph) -> Iterator[tuple[str, object]]:
    """Every tensor a graph holds, with a name to report it by: initializers, sparse ones, and tensor attributes of
    its nodes, subgraphs included."""
    for tensor in graph.initializer:
        yield f"initializer {tensor.name!r}", tensor
    for sparse in graph.sparse_initializer:
        yield f"sparse initializer {sparse.values.name!r}", sparse.values
        yield f"sparse initializer {sparse.values.name!r} (indices)", sparse.indices
    for node in graph.node:
        where = f"node {node.name or node.op_type!r}"
        for attribute in node.attribute:
            label = f"{where}, attribute {attribute.name!r}"
            if attribute.HasField("t"):
                yield label, attribute.t
            for tensor in attribute.tensors:
                yield label, tensor
            sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
            for item in [*sparse, *attribute.sparse_tensors]:
                yield label, item.values
                yield f"{label} (indices)", item.indices
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*subgraphs, *attribute.graphs]:
                yield from every_tensor(subgraph)


def resolve_tensors(model, path: Path) -> None:
    """Every tensor of ``model`` made self-contained: external bytes read from ``path``'s folder (and only there),
    each tensor's bytes checked against its shape.  Raises CnnxError naming the tensor."""
    from onnx import TensorProto

    folder = Path(os.path.abspath(path)).parent
    budget = [MODEL_LIMIT]
    for label, tensor in every_tensor(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            entries = {entry.key: entry.value for entry in tensor.external_data}
            data = external_bytes(entries, folder, f"{path}: {printable(label)}", budget)
            tensor.raw_data = data
            del tensor.external_data[:]
            tensor.data_location = TensorProto.DEFAULT
        _check_size(tensor, f"{path}: {printable(label)}")


def external_bytes(entries: dict[str, str], folder: Path, label: str, budget: list[int]) -> bytes:
    """The bytes an external-data record names: ``location`` a relative path inside ``folder`` (no ``..``, no link
    out of it, a regular file), ``offset`` and ``length`` within the file; ``budget[0]`` bytes at most in all."""
    location = entries.get("location", "")
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if not location or location.startswith(("/", "\\")) or ".." in parts or ":" in location:
        raise CnnxError(f"{label}: its data file {printable(location)!r} lies outside the model's folder; "
                        "cnnx reads weight files only from beside the model")
    target = Path(os.path.realpath(folder / Path(*parts)))
    if Path(os.path.realpath(folder)) not in target.parents:
        raise CnnxError(f"{label}: its data file {printable(location)!r} leads outside the model's folder")
    try:
        offset, length = int(entries.get("offset", "0")), entries.get("length")
        length = None if length is None else int(length)
    except ValueError:
        raise CnnxError(f"{label}: its offset and length must be whole numbers") from None
    try:
        stream = open_regular(target, "a weights file", limit=MODEL_LIMIT)
    except CnnxError as error:  # the message names the file; say which model and tensor wanted it
        raise CnnxError(f"{label}: {error}") from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        length = size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > size:
            raise CnnxError(f"{label}: bytes {offset} to {offset + length} of {printable(location)!r} lie past its "
                            f"end ({size} bytes)")
        if length > budget[0]:
            raise CnnxError(f"{label}: the model's weight files hold more than {MODEL_LIMIT:,} bytes")
        budget[0] -= length
        stream.seek(offset)
        return stream.read(length)


# Bytes an element takes in raw_data, by the data types cnnx reads (as onnx.TensorProto numbers them).
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
# Where each data type's values are kept when not in raw_data (float16 and bfloat16 are kept one to an int32).
_FIELDS = {1: "float_data", 2: "int32_data", 3: "int32_data", 4: "int32_data", 5: "int32_data", 6: "int32_data",
           7: "int64_data", 9: "int32_data", 10: "int32_data", 11: "double_data", 12: "uint64_data",
           13: "uint64_data", 16: "int32_data"}


def _check_size(tensor, label: str) -> None:
    """A tensor's bytes are exactly what its shape and type say (a tensor of one value may be a scalar)."""
    from onnx import TensorProto

    if tensor.data_type not in _ITEM_BYTES:
        name = TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in TensorProto.DataType.values() else \
            str(tensor.data_type)
        raise CnnxError(f"{label}: holds {name} values; cnnx reads numbers (floats, integers, booleans)")
    if any(d < 0 for d in tensor.dims):
        raise CnnxError(f"{label}: has a negative dimension {list(tensor.dims)}")
    count = math.prod(tensor.dims)
    if tensor.raw_data:
        held = len(tensor.raw_data) // _ITEM_BYTES[tensor.data_type]
        exact = len(tensor.raw_data) % _ITEM_BYTES[tensor.data_type] == 0
    else:
        held, exact = len(getattr(tensor, _FIELDS[tensor.data_type])), True
    if held != count or not exact:
        raise CnnxError(f"{label}: its shape {'x'.join(map(str, tensor.dims)) or 'scalar'} needs {count:,} values, "
                        f"but it holds {held:,}")


def check_opset(model, path: Path) -> int:
    """The model's ONNX opset, if cnnx's ops were checked against it."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset not in OPSETS:
        raise CnnxError(f"{path}: the model uses ONNX opset {opset}; cnnx runs opsets {OPSETS[0]} to {OPSETS[-1]}")
    return opset


def check_structure(model, path: Path) -> None:
    """A graph of nodes in order, each reading what an input, an initializer or a node before it makes, and
    outputs that are made."""
    graph = model.graph
    if not graph.node:
        raise CnnxError(f"{path}: the model has no nodes")
    if not graph.output:
        raise CnnxError(f"{path}: the graph declares no output")
    made = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:  # in the graph's order, as ONNX requires and cnnx runs them
        for name in node.input:
            if name and name not in made:
                raise CnnxError(f"{path}: node {printable(node.name or node.op_type)!r} reads "
                                f"{printable(name)!r}, which no node before it, input or initializer makes")
        made.update(node.output)
    for output in graph.output:
        if output.name not in made:
            raise CnnxError(f"{path}: the graph's output {printable(output.name)!r} is made by no node")


def load_graph(
    path: Path, *, layers: str | None = None, labels: Path | None = None, preprocess: Preparation | str = "none",
    memory_budget: int | None = None,
) -> Graph:
    """Read an ONNX model and make its graph ready: every op checked supported and every tensor resolved before
    any work, shapes worked out from the input's size, what needs no image computed once (within
    ``memory_budget`` bytes, if given), batch norms and scales folded into their convolutions."""
    start = time.perf_counter()
    path = Path(path)
    model = _parse(path)
    from onnx import numpy_helper  # the onnx package is there: _parse said so
    check_structure(model, path)
    _refuse_unsupported(model.graph, path)
    image = _image_input(model.graph, path)
    opset = check_opset(model, path)
    check_nodes(model.graph, opset, path)
    resolve_tensors(model, path)  # from here nothing of the model can name another file
    precision = in_float32(model, path)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # Each node's own copy of its proto: a part of the model would keep all of it (and its weights) alive.
    nodes = [Node(n.op_type, printable(n.name), list(n.input), list(n.output), _own_copy(n)) for n in model.graph.node]
    dims = [d.dim_value for d in image.type.tensor_type.shape.dim[1:]]
    prepared = preparation(preprocess) if isinstance(preprocess, str) else preprocess
    result = Graph(path, nodes, constants, image.name, (dims[0], *(dims[1:] if all(dims) else ANY_SIZE_AT_LOAD)),
                   model.graph.output[0].name, opset, {}, layers, _class_names(model, labels), prepared)
    result.loaded_notes = precision
    outline = _Outline(model)
    del model  # the weights are in ``constants`` now: the parsed model's copy goes
    budget = min(FOLDED_BYTES, memory_budget or FOLDED_BYTES)
    if not all(dims):  # any size: made ready again for each input size asked for
        result.any_size = _Remake(result, outline, budget, (_copied(nodes), dict(constants)))
        result.any_size(prepared.any_size_at_load(result.input_shape_))
    else:
        _make_ready(result, outline, budget)
    if layers and layers != "all" and not result.matching(layers):
        raise CnnxError(f"{path}: --layers {layers!r} names no node; give node names, op types or patterns")
    result.ready_seconds = time.perf_counter() - start
    return result


# The size a model that takes any size is made ready at, until an image gives its own (or --size a side).
ANY_SIZE_AT_LOAD = (224, 224)


def _make_ready(graph: Graph, outline: _Outline, budget: int, shape=None, pristine=None) -> None:
    """Shapes worked out at the input's size, what needs no image computed, scales and shifts folded, unread nodes
    dropped; for a model of any size, from its ``pristine`` nodes and constants at ``shape``."""
    start = time.perf_counter()
    if shape is not None:
        graph.input_shape_ = tuple(shape)
        graph.nodes, graph.constants = _copied(pristine[0]), dict(pristine[1])
    graph.shapes = _shapes_before_running(graph, outline)
    _check_convs(graph)
    _check_resizes(graph)
    graph.computed = _fold_constants(graph, budget)
    graph.notes = (*graph.loaded_notes, *_nonfinite_weights(graph))
    graph.folded = _fold_scales_and_shifts(graph)
    _drop_unread(graph)
    graph.ready_seconds = time.perf_counter() - start


@dataclass
class _Remake:
    """Makes a model of any size ready again at an input shape, from its pristine nodes and constants; a class, not
    a closure, so that the graph goes to worker processes as any other."""

    graph: Graph
    outline: _Outline
    budget: int
    pristine: tuple

    def __call__(self, shape) -> None:
        _make_ready(self.graph, self.outline, self.budget, shape, self.pristine)


def _copied(nodes: list[Node]) -> list[Node]:
    """Nodes whose inputs and outputs can be rewired (as folding does) without touching these."""
    return [Node(n.op, n.name, list(n.inputs), list(n.outputs), n.proto) for n in nodes]


def _parse(path: Path):
    """The model a file holds, parsed (onnx imported here: it is an optional extra)."""
    try:
        import onnx
    except ImportError:
        raise CnnxError('an ONNX model needs the onnx package: pip install "cnnx[onnx]"') from None
    data = read_regular(path, "an ONNX model", limit=MODEL_LIMIT)
    try:
        return onnx.load_model_from_string(data)
    except Exception as error:  # the protobuf parser raises several kinds on bad bytes
        raise CnnxError(f"{path}: not an ONNX model ({type(error).__name__})") from None


def _refuse_unsupported(graph, path: Path) -> None:
    """Every op cnnx does not run, named with its first node, before any work; in an If's branches too, so that
    onnx's shape inference only ever meets the ops cnnx runs."""
    unsupported: dict[str, str] = {}
    for node in _every_node(graph):
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx"):
            unsupported.setdefault(printable(node.op_type), printable(node.name or "?"))
    if unsupported:
        named = ", ".join(f"{op} (node {name})" for op, name in unsupported.items())
        verb = "is" if len(unsupported) == 1 else "are"
        raise CnnxError(f"{path}: op {named} {verb} not supported; cnnx runs {', '.join(SUPPORTED)}")


def _every_node(graph):
    """The graph's nodes, and those of every branch inside them, outer first."""
    from onnx import AttributeProto

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for branch in (attribute.g,) if attribute.type == AttributeProto.GRAPH else attribute.graphs:
                yield from _every_node(branch)


def check_nodes(graph, opset: int, path: Path) -> None:
    """Each node (branches' nodes too) as its op's schema at the model's opset has it, as onnx's checker requires:
    inputs and outputs in number, attributes it takes, each once and of the kind it takes, the required ones there.
    A string where Conv reads its group, or a batch norm with one input, would otherwise fail deep in an op."""
    from onnx import AttributeProto, defs

    for node in _every_node(graph):  # a node before its branches, whose attributes are then known to be graphs
        where = f"{path}: node {printable(node.name or node.op_type)} ({printable(node.op_type)})"
        try:
            schema = defs.get_schema(node.op_type, opset, node.domain)
        except defs.SchemaError:
            raise CnnxError(f"{where}: ONNX opset {opset} has no such op") from None
        for kind, count, least, most in (("inputs", len(node.input), schema.min_input, schema.max_input),
                                         ("outputs", len(node.output), schema.min_output, schema.max_output)):
            if not least <= count <= most:
                takes = least if least == most else f"{least} to {most}" if most < 1 << 20 else f"{least} or more"
                raise CnnxError(f"{where}: has {count} {kind}; {printable(node.op_type)} takes {takes}")
        given = [attribute.name for attribute in node.attribute]
        for attribute in node.attribute:
            name, expected = printable(attribute.name), schema.attributes.get(attribute.name)
            if expected is None:
                raise CnnxError(f"{where}: {printable(node.op_type)} takes no attribute {name!r}")
            if given.count(attribute.name) > 1:
                raise CnnxError(f"{where}: its {name} is given {given.count(attribute.name)} times")
            if attribute.type != int(expected.type):
                kind = AttributeProto.AttributeType.Name(attribute.type).lower()
                raise CnnxError(f"{where}: its {name} is of kind {kind}; {node.op_type} takes "
                                f"{expected.type.name.lower()}")
        missing = [name for name, attribute in schema.attributes.items() if attribute.required and name not in given]
        if missing:
            raise CnnxError(f"{where}: lacks its {', '.join(missing)}")
        parts = next((attribute.i for attribute in node.attribute if attribute.name == "num_outputs"), None)
        if node.op_type == "Split" and parts is not None and parts != len(node.output):
            # onnx's shape inference aborts the process on fewer parts than outputs
            raise CnnxError(f"{where}: splits into {parts} parts but has {len(node.output)} outputs")


def _image_input(graph, path: Path):
    """The graph's one input that is no initializer: an image (N, 1 or 3, H, W) of a fixed size, or of any height
    and width. An image taken channels last (N, H, W, 1 or 3), as TensorFlow's exports take it, is given a Transpose
    from channels first in front, so that cnnx gives every model its image the same way."""
    held = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in held]
    if len(inputs) != 1:
        raise CnnxError(f"{path}: cnnx runs models of one image input; this one takes {len(inputs)} inputs")
    declared = inputs[0].type.tensor_type.shape.dim
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in declared]
    last = len(dims) == 4 and dims[1] not in (1, 3) and dims[3] in (1, 3) and bool(dims[1]) == bool(dims[2])
    if len(dims) != 4 or not (last or dims[1] in (1, 3) and bool(dims[2]) == bool(dims[3])):
        shown = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in declared]
        raise CnnxError(
            f"{path}: the input {inputs[0].name!r} has shape {shown}; cnnx runs models of an image "
            "input (N, 1 or 3, H, W) or (N, H, W, 1 or 3), of a fixed size or of any height and width"
        )
    if dims[0] > 1:  # its exporter wrote the batch into the graph (a Reshape to (N, -1), say): one image cannot run
        raise CnnxError(f"{path}: the input {printable(inputs[0].name)!r} takes a batch of {dims[0]} images; cnnx runs "
                        "one image at a time: export the model with a batch of 1 or a dynamic batch")
    return _channels_first(graph, inputs[0]) if last else inputs[0]


def _channels_first(graph, image):
    """A new input (N, C, H, W) in front of the channels-last ``image``, through a Transpose named for what it does;
    the input the graph now takes."""
    from onnx import helper

    taken = {v.name for v in (*graph.input, *graph.initializer)} | {o for n in graph.node for o in n.output}
    name = next(f"{image.name}.channels_first{k or ''}" for k in range(len(taken) + 1)
                if f"{image.name}.channels_first{k or ''}" not in taken)
    ahead = helper.make_node("Transpose", [name], [image.name], name="channels last, as the model takes it",
                             perm=[0, 2, 3, 1])
    graph.node.insert(0, ahead)
    dims = image.type.tensor_type.shape.dim
    sides = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    given = helper.make_tensor_value_info(name, image.type.tensor_type.elem_type, [sides[k] for k in (0, 3, 1, 2)])
    graph.input.remove(image)
    graph.input.append(given)
    return given


def _class_names(model, labels: Path | None) -> tuple[str, ...]:
    """The output's class names: from a labels file, else the model's own ``labels`` metadata (a JSON list of
    names, as ``cnnx train`` writes it, or names separated by commas)."""
    if labels:
        return tuple(_labels(labels))
    stored = next((p.value for p in model.metadata_props if p.key == "labels"), "")
    try:
        names = json.loads(stored)
    except ValueError:
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = stored.split(",")
    return tuple(printable(n.strip()) for n in names if n.strip())


# Floating-point types a model may hold, computed in float32 as everything in cnnx is (onnx.TensorProto's numbers).
_OTHER_FLOATS = {10: "float16", 16: "bfloat16", 11: "float64"}


def in_float32(model, path: Path) -> tuple[str, ...]:
    """The model's float16, bfloat16 and float64 values made float32 in place, in every tensor, declaration and Cast
    (branches too), as cnnx computes everything; a note saying so, if there were any.  Half-precision weights
    become float32 exactly; float64 ones are rounded."""
    from onnx import AttributeProto, TensorProto, numpy_helper

    found: set[int] = set()

    def tensor(t) -> None:
        if t.data_type in _OTHER_FLOATS:
            found.add(t.data_type)
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))

    def declared(value) -> None:
        kind = value.type.tensor_type
        if kind.elem_type in _OTHER_FLOATS:
            found.add(kind.elem_type)
            kind.elem_type = TensorProto.FLOAT

    def graph(g) -> None:
        for t in g.initializer:
            tensor(t)
        for value in (*g.input, *g.output, *g.value_info):
            declared(value)
        for node in g.node:
            for a in node.attribute:
                if a.type == AttributeProto.TENSOR:
                    tensor(a.t)
                for t in a.tensors:
                    tensor(t)
                for branch in (a.g,) if a.type == AttributeProto.GRAPH else a.graphs:
                    graph(branch)
                if node.op_type == "Cast" and a.name == "to" and a.i in _OTHER_FLOATS:
                    found.add(a.i)
                    a.i = TensorProto.FLOAT

    graph(model.graph)
    if not found:
        return ()
    kinds = " and ".join(_OTHER_FLOATS[k] for k in sorted(found, key=list(_OTHER_FLOATS).index))
    rounded = "; its float64 values rounded to float32" if 11 in found else ""
    return (f"{path.name}: its {kinds} values are computed in float32, as cnnx computes everything{rounded}",)


def _nonfinite_weights(graph: Graph) -> tuple[str, ...]:
    """A line for each constant holding NaN or infinite values: the maps they reach will hold them too."""
    notes = []
    for name, value in graph.constants.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            notes.append(f"{graph.path.name}: {bad} of the {value.size} values of {printable(name)!r} are not finite "
                         "(NaN or infinite); the values computed from them will not be either")
    return tuple(notes)


def _check_resizes(graph: Graph) -> None:
    """Each Resize (or Upsample) is one cnnx runs, from its sizes or scales known at load: refused here, not on the
    image."""
    for node in (n for n in graph.nodes if n.op in ("Resize", "Upsample")):
        shape = graph.shapes.get(node.inputs[0])
        given = [graph.constants.get(name) if name else None for name in node.inputs]
        if shape and all(v is not None for v, name in zip(given[1:], node.inputs[1:], strict=True) if name):
            try:
                resize_taps(node, given, graph.opset, shape)
            except CnnxError as error:
                raise CnnxError(f"{graph.path}: {error}") from None


def _check_convs(graph: Graph) -> None:
    """Each convolution's weights fit its input, as far as they are known at load: what shape inference lets pass."""
    for node in (n for n in graph.nodes if n.op == "Conv" and len(n.inputs) > 1):
        constant = graph.constants.get(node.inputs[1])
        weights = constant.shape if constant is not None else graph.shapes.get(node.inputs[1])
        if not weights:
            continue
        x = graph.shapes.get(node.inputs[0], ())
        group = node.attrs.get("group", 1)
        where = f"{graph.path}: node {node.name or node.op} (Conv)"
        if len(weights) != 4 or weights[0] < 1 or group < 1 or weights[0] % group:
            raise CnnxError(f"{where}: weights of shape {list(weights)} in {group} groups are no bank of 2-D kernels")
        if len(x) == 4 and x[1] and x[1] != weights[1] * group:
            raise CnnxError(f"{where}: its input has {x[1]} channels, its weights read {weights[1] * group}")


def _first_line(error: Exception) -> str:
    """What onnx's checker said, in one line: the node and the fault."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return printable(lines[0] if lines else type(error).__name__)


def _own_copy(proto):
    copy = type(proto)()
    copy.CopyFrom(proto)
    return copy


@dataclass
class _Outline:
    """What shape inference needs of a model besides its nodes and constants: its declarations."""

    name: str
    outputs: list
    opsets: list
    ir_version: int

    def __init__(self, model):
        self.name, self.outputs = model.graph.name, list(model.graph.output)
        self.opsets, self.ir_version = list(model.opset_import), max(model.ir_version, 4)


# Values worth working out at load, before any image: a shape, and the few numbers computed from shapes.
_FOLDED_AT_MOST = 4096  # elements
_FOLDING_ROUNDS = 8  # a chain of shape arithmetic through as many maps (exporters write one or two)


def _shapes_before_running(graph: Graph, outline: _Outline) -> dict[str, Shape]:
    """Every value's shape from the input's fixed size, without running the graph on an image.

    Where shape inference cannot tell (a map sized by Shape -> Mul -> ConstantOfShape), the small values that
    depend on shapes alone are computed, become constants, and shapes are inferred again.
    """
    shapes = _inferred_shapes(graph, outline)
    for _ in range(_FOLDING_ROUNDS):  # each round computes what the shapes now known allow, and infers again
        if _unknown(graph, shapes) is None and not any(node.op == "If" for node in graph.nodes):
            return shapes
        before = len(graph.nodes)
        _fold_known_values(graph, shapes)
        shapes = _inferred_shapes(graph, outline)
        if len(graph.nodes) == before:
            break
    branch = next((node for node in graph.nodes if node.op == "If"), None)
    if branch is not None:
        raise CnnxError(f"{graph.path}: node {branch.name or branch.op} (If) branches on values only the image "
                        "gives; cnnx runs an If only when its condition is known before the image (from shapes)")
    shapes = _inferred_shapes(graph, outline)
    node = _unknown(graph, shapes)
    if node is not None:
        raise CnnxError(f"{graph.path}: the shape of node {node.name or node.op} ({node.op})'s output cannot be "
                        "worked out before running it; cnnx runs graphs whose shapes follow from the input's size")
    return shapes


def _unknown(graph: Graph, shapes: dict[str, Shape | None]) -> Node | None:
    """The first node whose output's shape is not known, if any."""
    return next((n for n in graph.nodes if shapes.get(n.outputs[0]) is None), None)


def _inferred_shapes(graph: Graph, outline: _Outline) -> dict[str, Shape | None]:
    """onnx's strict shape inference with the input at its fixed size (a batch of one); the weights declared by
    shape, not copied, and the small constants (shapes and axes that Reshape and the like read) given."""
    from onnx import helper, numpy_helper, shape_inference

    small = [numpy_helper.from_array(v, k) for k, v in graph.constants.items() if v.size <= 64]
    declared = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
                for k, v in graph.constants.items() if v.size > 64]
    image = helper.make_tensor_value_info(graph.input_name, 1, [1, *graph.input_shape_])
    light = helper.make_graph([n.proto for n in graph.nodes], outline.name, [image, *declared], outline.outputs,
                              small)
    model = helper.make_model(light, opset_imports=outline.opsets, ir_version=outline.ir_version)
    # A model of any size may not fit a size asked for (a fixed 7x7 pool at its end, on a 128x128 image).
    at_size = (f" at the input size {graph.input_shape_[1]}x{graph.input_shape_[2]} (the model takes any size; a "
               "larger --size may fit)") if graph.any_size else ""
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as error:  # onnx names the node and what is wrong with it
        raise CnnxError(f"{graph.path}: {_first_line(error)}{at_size}") from None
    values = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    shapes = {v.name: _known_shape(v) for v in values}
    for name, shape in shapes.items():
        # Inference ran a malformed node's arithmetic through, or a map came out empty (a Resize by 0, a Slice
        # past the end): nothing could be drawn or computed from it.
        if shape is not None and (min(shape, default=0) < 0 or len(shape) == 4 and 0 in shape):
            raise CnnxError(f"{graph.path}: value {printable(name)!r} comes out of size {list(shape)}: its node "
                            f"does not fit its input{at_size}")
    shapes.update({k: v.shape for k, v in graph.constants.items()})
    return shapes


def _known_shape(value) -> Shape | None:
    """A declared value's shape, or None where its rank or any dimension is not known."""
    kind = value.type.tensor_type
    if not kind.HasField("shape") or not all(d.HasField("dim_value") for d in kind.shape.dim):
        return None
    return tuple(d.dim_value for d in kind.shape.dim)


def _fold_known_values(graph: Graph, shapes: dict[str, Shape | None]) -> None:
    """Nodes whose small outputs follow from shapes and constants alone are computed now and become constants;
    an If whose condition is then known is replaced by the branch it takes."""
    kept = []
    pending = list(graph.nodes)
    while pending:
        node = pending.pop(0)
        if node.op == "If" and node.inputs[0] in graph.constants:
            pending[:0] = _taken_branch(node, bool(np.asarray(graph.constants[node.inputs[0]]).reshape(-1)[0]),
                                        graph.constants)
            continue
        inputs = [name for name in node.inputs if name]
        if node.op == "Shape" and shapes.get(node.inputs[0]) is not None:
            shaped = np.broadcast_to(np.uint8(0), shapes[node.inputs[0]])  # the shape, with no memory behind it
            graph.constants[node.outputs[0]] = OPS["Shape"].run(node, [shaped], graph.opset)
            continue
        held = [graph.constants.get(name) for name in inputs]
        small = all(v is not None and v.size <= _FOLDED_AT_MOST for v in held)
        wanted = held[0] if node.op == "ConstantOfShape" and held and held[0] is not None else None
        filled = wanted is None or math.prod(int(d) for d in np.asarray(wanted).reshape(-1)) <= _FOLDED_AT_MOST
        if (inputs or node.op == "Constant") and small and filled and len(node.outputs) == 1:
            values = [graph.constants.get(name) if name else None for name in node.inputs]
            output = run_checked(graph.path, node, run_node, node, values, graph.opset)[0]
            if output.size <= _FOLDED_AT_MOST:
                graph.constants[node.outputs[0]] = output
                continue
        kept.append(node)
    graph.nodes = kept


# Bytes of values computed at load beyond the model's own weights: VGG-19's weights, built by ConstantOfShape in the
# onnx package's light models, take 548 MB; a graph asking for more gets its nodes run with the image instead.
FOLDED_BYTES = 1 << 30


def _fold_constants(graph: Graph, budget: int) -> int:
    """Every node whose inputs are all known before the image (weights built by ConstantOfShape, shape arithmetic,
    casts of weights) is computed once now, as ONNX Runtime does when it makes a session; the number folded.

    Each output's size is known from shapes before it is computed, so their total stays within ``budget`` bytes.
    """
    spent, kept = 0, []
    weights = sum(value.nbytes for value in graph.constants.values())
    for node in graph.nodes:
        inputs = [name for name in node.inputs if name]
        known = (inputs or node.op == "Constant") and all(name in graph.constants for name in inputs)
        sizes = [graph.shapes.get(name) for name in node.outputs]
        cost = sum(4 * math.prod(shape) for shape in sizes if shape is not None)
        if (not known or None in sizes or graph.output_name in node.outputs or node.op == "If"
                or spent + cost > budget):
            kept.append(node)
            continue
        values = [graph.constants.get(name) if name else None for name in node.inputs]
        outputs = run_checked(graph.path, node, run_node, node, values, graph.opset)
        graph.constants.update(zip(node.outputs, outputs, strict=False))
        spent += cost
    computed = len(graph.nodes) - len(kept)
    graph.nodes = kept
    graph.load_bytes = weights + spent
    return computed


def _drop_unread(graph: Graph) -> None:
    """Nodes whose outputs nothing reads (nor the graph gives), from the last back, and constants nothing reads."""
    wanted = {graph.output_name}
    kept = []
    for node in reversed(graph.nodes):
        if wanted & set(node.outputs):
            kept.append(node)
            wanted.update(node.inputs)
    graph.nodes = kept[::-1]
    for name in graph.constants.keys() - wanted:
        del graph.constants[name]


def _taken_branch(node: Node, condition: bool, constants: dict) -> list[Node]:
    """The nodes of the branch an If takes, its constants among the graph's, and an Identity from each of the
    branch's outputs to the If's (a branch reads the graph's values by name, as ONNX lets it)."""
    from onnx import helper, numpy_helper

    branch = node.attrs["then_branch" if condition else "else_branch"]
    constants.update({t.name: numpy_helper.to_array(t) for t in branch.initializer})
    nodes = [Node(n.op_type, printable(n.name), list(n.input), list(n.output), _own_copy(n)) for n in branch.node]
    for made, wanted in zip(branch.output, node.outputs, strict=True):
        nodes.append(Node("Identity", "", [made.name], [wanted], helper.make_node("Identity", [made.name], [wanted])))
    return nodes


def _labels(path: Path) -> list[str]:
    text = read_regular(Path(path), "a labels file", limit=16 << 20).decode("utf-8", "replace")
    return [printable(line.strip()) for line in text.splitlines() if line.strip()]


def _fold_scales_and_shifts(graph: Graph) -> int:
    """Each batch norm, and each Mul, Add, Sub or Div by a constant per channel, that alone reads a Conv's output
    becomes part of the Conv's weights and bias, and one that alone reads a batch norm's becomes part of the norm's
    scale and bias, as ONNX Runtime fuses them: a pass over the map each, saved (model-zoo graphs write a batch
    norm as a Mul and an Add after every convolution). The number of nodes folded."""
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    producer = {out: node for node in graph.nodes for out in node.outputs}
    kept = []
    for node in graph.nodes:
        affine = _per_channel(node, graph)
        source = producer.get(affine[0]) if affine else None
        if (source is not None and _takes_scale(source, graph) and readers.get(affine[0]) == 1
                and affine[0] != graph.output_name and _scale_and_shift(source, *affine[1:], graph.constants)):
            source.outputs = list(node.outputs)
            source.name = source.name or node.name
            producer.update(dict.fromkeys(node.outputs, source))
        else:
            kept.append(node)
    folded = len(graph.nodes) - len(kept)
    graph.nodes = kept
    return folded


def _takes_scale(node: Node, graph: Graph) -> bool:
    """A Conv with constant weights (and bias), or a batch norm with constant parameters, of one output."""
    constant = graph.constants.keys()
    if len(node.outputs) != 1:
        return False
    if node.op == "Conv":
        return node.inputs[1] in constant and (len(node.inputs) < 3 or not node.inputs[2] or node.inputs[2] in constant)
    return node.op == "BatchNormalization" and all(i in constant for i in node.inputs[1:5])


def _per_channel(node: Node, graph: Graph) -> tuple[str, np.ndarray, np.ndarray] | None:
    """``(x, factor, shift)`` when ``node`` computes ``x * factor + shift`` of its input ``x`` with constants of one
    number a channel (float64), leaving the shape as it is; else None."""
    if node.op == "BatchNormalization":
        if not _takes_scale(node, graph):  # constant parameters, one output
            return None
        scale, bias, mean, var = params = [graph.constants[i].astype(np.float64) for i in node.inputs[1:5]]
        if scale.ndim != 1 or len({p.shape for p in params}) != 1:  # a malformed model's: left to fail as it runs
            return None
        with np.errstate(all="ignore"):
            factor = scale / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
            return _finite(node.inputs[0], factor, bias - mean * factor)
    if node.op not in ("Mul", "Add", "Sub", "Div") or len(node.inputs) != 2:
        return None
    x, constant = node.inputs
    if x in graph.constants and node.op in ("Mul", "Add"):  # c * x and c + x alike
        x, constant = constant, x
    vector = _channel_vector(graph.constants.get(constant), graph.shapes.get(x))
    if vector is None or x in graph.constants or (node.op == "Div" and not vector.all()):
        return None
    ones, zeros = np.ones_like(vector), np.zeros_like(vector)
    if node.op == "Div":  # only here: a Mul's or an Add's vector may hold zeros
        return _finite(x, 1 / vector, zeros)
    factor, shift = {"Mul": (vector, zeros), "Add": (ones, vector), "Sub": (ones, -vector)}[node.op]
    return _finite(x, factor, shift)


def _finite(x: str, factor: np.ndarray, shift: np.ndarray) -> tuple[str, np.ndarray, np.ndarray] | None:
    """The scale and shift, where they are finite: an infinite one, folded into weights, would turn the infinities
    the node makes into NaN."""
    return (x, factor, shift) if np.isfinite(factor).all() and np.isfinite(shift).all() else None


def _channel_vector(value: np.ndarray | None, shape: Shape | None) -> np.ndarray | None:
    """``value`` as one number for each channel of a value of ``shape`` (N, C, ...), where broadcasting it there
    varies along the channel axis only (float64); else None."""
    if value is None or not shape or len(shape) < 2 or value.dtype != np.float32 or value.ndim > len(shape):
        return None
    aligned = (1,) * (len(shape) - value.ndim) + value.shape
    if any(size != 1 for k, size in enumerate(aligned) if k != 1) or aligned[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(value.reshape(aligned[1]).astype(np.float64), (shape[1],))


def _scale_and_shift(node: Node, factor: np.ndarray, shift: np.ndarray, constants: dict) -> bool:
    """``node``'s output made ``output * factor + shift`` per channel: a Conv's weights and bias, or a batch norm's
    scale and bias (both inputs 1 and 2), replaced by new ones computed in float64 (the old ones may be read
    elsewhere). False, changing nothing, where they are not one number a channel (a malformed model's)."""
    inputs = node.inputs + [""] * (3 - len(node.inputs))
    weight = constants[inputs[1]].astype(np.float64)
    bias = constants[inputs[2]].astype(np.float64) if inputs[2] else np.zeros_like(factor)
    if weight.ndim < 1 or weight.shape[0] != len(factor) or bias.shape != factor.shape:
        return False
    scaled = weight * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
    inputs[2] = _fresh(constants, f"{inputs[1]}__folded_bias", bias * factor + shift)
    inputs[1] = _fresh(constants, f"{inputs[1]}__folded", scaled)
    node.inputs = inputs
    return True


def _fresh(constants: dict, name: str, value: np.ndarray) -> str:
    """``value`` (as float32) kept under ``name``, or a name made from it that no other constant has."""
    taken, k = name, 1
    while taken in constants:
        taken, k = f"{name}{k}", k + 1
    constants[taken] = value.astype(np.float32)
    return taken

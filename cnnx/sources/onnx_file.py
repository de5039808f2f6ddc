"""Reading an ONNX file from a stranger: its tensors from its own folder only, every size checked before use.

A model file is untrusted input.  Every tensor it holds (initializers,
sparse initializers, ``Constant`` values and any other tensor attribute, in
subgraphs too) may say that its bytes live in another file; ``resolve_tensors``
reads such bytes through one function, ``external_bytes``, which accepts only
a regular file inside the model's own folder and a byte range inside that
file.  Each tensor's declared shape is then checked against the bytes it
holds, so a tensor that claims 10^11 values in 36 bytes is refused before
anything is allocated.  After this, nothing that reads the model (the onnx
package's helpers included) can reach another file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from cnnx.base.errors import CnnxError, printable
from cnnx.base.files import open_regular

__all__ = ["MODEL_LIMIT", "OPSETS", "check_opset", "check_structure", "external_bytes", "resolve_tensors"]

MODEL_LIMIT = 2 << 30  # bytes a model file, and all the weight files it names, may take
OPSETS = range(7, 22)  # the ONNX opsets cnnx's ops were checked against (tests: 9 to 21; the light models: 9)


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

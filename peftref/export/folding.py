r"""Fold an adapter into an ONNX model: W ← round(W + ΔW(W)) in every adapted layer, written as a new model.

    fold(base.onnx, adapter, out.onnx)  =  base.onnx with, for each adapted module m,
        W_m ← round_dtype( W_m + ΔW_m(W_m) )        (in float32 or float64 — `precision` — then rounded once)
    and each ``modules_to_save`` tensor replaced by its saved value.

ΔW is the reference's, so the fold needs neither torch nor PEFT. The weight is read and written in the layout the graph
stores it (W or Wᵀ, see :mod:`peftref.export.graph`), one block of rows at a time. Where the reference gives thin factors
ΔW = L R (``delta_factors``: LoRA, SVD re-scaling), each block of ΔW is computed from them in the stored layout — rows of
L R, or of ΔWᵀ = Rᵀ Lᵀ — and the dense ΔW is never formed; the other methods copy the block from the reference's dense
ΔW (:meth:`peftref.adapter.LayerAdapter.delta_weight`). Bat, whose update depends on W, sees W in the (d_out, d_in) layout.

Safety:

- **Shared initializers.** Only the nodes of the adapted module see the new weight. When an initializer is also read by
  other nodes (tied embedding and ``lm_head``, or two layers whose equal weights the TorchScript exporter de-duplicated),
  the adapted module gets its own copy ``<name>.peftref.<module>`` and the others keep the original. A weight that reaches
  the module through a ``Transpose``/``Cast`` whose output other modules also read cannot be separated that way: refused.
- **Streaming.** Models with external data are processed tensor by tensor: unchanged tensors are copied file range to file
  range in the kernel (``copy_file_range``); each merged weight is computed from a memory map of its input bytes, a block
  of rows at a time, by WORKERS threads that each write their own blocks into the (preallocated) output file — so peak
  memory is a few blocks, not the model.
- **Atomic output.** Everything is written into a temporary directory beside the output, checked (onnx checker) and
  verified (onnxruntime) there, then renamed into place: on any error nothing is left behind. The output never replaces
  the input model or any of its external data files.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import ml_dtypes
import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

from .. import refimpl
from ..adapter import Adapter, LayerAdapter
from .graph import Graph, Located, SavedTensor, load_model, locate, locate_saved
from .tensors import FLOAT_TYPES, ExportError, dtype_name, external_location, is_external, nbytes, raw_bytes, read_array, round_to_dtype

#: bytes per read when a file range cannot be copied in the kernel.
CHUNK = 2**24
#: protobuf cannot serialize a message over 2 GiB; an inline model larger than this is written with external data.
PROTOBUF_LIMIT = 2**31 - 2**26
#: external tensors of at least ALIGN_THRESHOLD bytes start at a multiple of ALIGNMENT (memory-mappable by onnxruntime).
ALIGNMENT, ALIGN_THRESHOLD = 2**16, 2**20
#: the merge works on blocks of rows of the stored weight of about this many elements (4 MB of float64), so that the block
#: of ΔW, the sum and the rounding stay in cache; a dense ΔW the graph stores transposed is read in tiles of this many
#: columns, which keep its strided reads within the caches.
BLOCK_ELEMENTS = 2**19
TRANSPOSED_TILE_COLUMNS = 16
#: methods whose ΔW depends on W's values (SPEC: Bat only); the others are given only W's shape, which saves a float64
#: copy of W per layer.
DEPENDS_ON_W = frozenset({"bat"})
#: the arithmetic a merge may use (see work_dtype).
PRECISIONS = ("float32", "float64")
#: threads merging blocks of one weight at once.
WORKERS = min(4, os.cpu_count() or 1)


@dataclass
class LayerReport:
    """One adapted module: where its weight was found and how long the merge took."""

    module: str
    method: str
    graph_module: str | None
    located_by: str  # "scope", "name", "value" or "shape"
    initializers: list[str]  # the initializers written (copies named <name>.peftref.<module> when shared)
    layout: str  # "W" (d_out, d_in) or "W^T" (d_in, d_out) as stored
    dtype: str
    shape: tuple[int, int]  # (d_out, d_in)
    shared: bool  # the base initializer had other readers, which keep the original
    seconds: float = 0.0


@dataclass
class FoldReport:
    """What :func:`fold` did: per layer, per saved tensor, sizes, time, and the verification."""

    base: str
    output: str
    adapter: str
    layers: list[LayerReport]
    saved: list[dict]
    external_data: str | None  # the output's external data file name, if any
    bytes_written: int = 0
    precision: str = "float32"  # the arithmetic of W + ΔW (fold's `precision`)
    seconds: float = 0.0
    verification: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Change:
    """New values for one initializer; `in_place` when `slots` are all its readers, else a copy only `slots` read."""

    label: str  # the module (or module.param) it belongs to, for messages
    source: str | None  # the base initializer (None: a new bias)
    slots: tuple[tuple[int, int], ...]  # (node, input) pairs that must read the new values
    in_place: bool
    target: str  # the initializer name in the output (== source when in place)
    values: Callable[..., np.ndarray | None]  # values(out=None): the new array (same shape, dtype as the source), or written to out (Rows)
    report: LayerReport | None = None
    add_to: tuple[int, ...] = ()  # a new bias: the linear nodes whose output it is added to


@dataclass
class Plan:
    """Everything the fold will change, decided before anything is written."""

    graph: Graph
    adapter: Adapter
    located: dict[str, Located]
    saved: list[SavedTensor]
    changes: list[Change] = field(default_factory=list)
    layers: list[LayerReport] = field(default_factory=list)


DeltaRows = Callable[[slice, np.ndarray], None]  # (rows, out): out ← those rows of ΔW in the stored layout, in out's dtype


def delta_rows(layer: LayerAdapter, W: np.ndarray, transposed: bool, work: np.dtype = np.dtype(np.float64)) -> DeltaRows:
    """Rows of ΔW in the stored layout — ΔW (d_out, d_in), or ΔWᵀ (d_in, d_out) when `transposed` — block by block, in the
    arithmetic dtype `work` (the `out` the rows are written to has it).

    With the reference's thin factors ΔW = L R the stored layout is a product P Q, (P, Q) = (L, R) or (Rᵀ, Lᵀ), and a block
    of rows is P[rows] Q (k multiply-adds per element, k the rank), computed in `work`. Otherwise the rows are copied from the
    reference's dense float64 ΔW (rounded to `work` on the way).
    """
    module = refimpl.get(layer.method)
    shape_only = np.broadcast_to(0.0, layer.shape)  # W for the methods that use only its shape, without a float64 copy
    try:
        if hasattr(module, "delta_factors"):
            L, R = module.delta_factors(shape_only, layer.params, layer.config)  # (d_out, k), (k, d_in)
            P, Q = (R.T, L.T) if transposed else (L, R)  # (rows, k), (k, cols)
            P, Q = np.ascontiguousarray(P, work), np.ascontiguousarray(Q, work)
            return lambda rows, out: np.matmul(P[rows], Q, out=out)  # (rows, k) @ (k, cols)
        dW = module.delta_weight(W if layer.method in DEPENDS_ON_W else shape_only, layer.params, layer.config)  # (d_out, d_in)
    except ValueError as err:
        raise ExportError(f"module {layer.module!r} ({layer.method}): {err}") from None
    dW_stored = dW.T if transposed else dW  # (rows, cols): a strided view when transposed
    tile = TRANSPOSED_TILE_COLUMNS if transposed else dW_stored.shape[1]

    def copy_rows(rows: slice, out: np.ndarray) -> None:
        for j in range(0, out.shape[1], tile):
            out[:, j : j + tile] = dW_stored[rows, j : j + tile]

    return copy_rows


class ArrayRows:
    """Where merged rows go: an array in memory."""

    def __init__(self, array: np.ndarray):
        self.array, self.dtype = array, array.dtype

    def rows(self, block: slice) -> np.ndarray:
        """The destination of rows `block`, filled by the caller and then handed to :meth:`commit`."""
        return self.array[block]

    def commit(self, block: slice, values: np.ndarray) -> None:
        pass  # already in place

    def put(self, values: np.ndarray) -> None:
        """All the tensor's values at once."""
        self.array[...] = values


class FileRows:
    """Where merged rows go: the bytes of a tensor of `shape` and `dtype` at `offset` in the open file `fd`, written with
    ``pwrite`` block by block from a buffer per thread.

    Writes into a preallocated file are several times faster than stores into a memory map of it, whose every first touch
    of a page is a fault that allocates it (measured: 0.2 s against 1.8–2.8 s per GiB on ext4).
    """

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.fd, self.offset, self.dtype = fd, offset, np.dtype(dtype)
        self.row_shape = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.local = threading.local()

    def rows(self, block: slice) -> np.ndarray:
        count = block.stop - block.start
        buffer = getattr(self.local, "buffer", None)
        if buffer is None or len(buffer) < count:
            buffer = self.local.buffer = np.empty((count, *self.row_shape), self.dtype)
        return buffer[:count]

    def commit(self, block: slice, values: np.ndarray) -> None:
        write_all(self.fd, values, self.offset + block.start * self.row_bytes)

    def put(self, values: np.ndarray) -> None:
        write_all(self.fd, np.ascontiguousarray(values, self.dtype), self.offset)


Rows = ArrayRows | FileRows


def write_all(fd: int, data: np.ndarray | bytes, at: int) -> None:
    """pwrite every byte of `data` (bytes or a contiguous array) at byte `at` of `fd` (pwrite may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded in this process (found once: the search costs a few ms)."""
    return ThreadpoolController()


def merge_rows(stored: np.ndarray, delta: DeltaRows, merged: Rows, work: np.dtype = np.dtype(np.float64)) -> bool:
    """merged ← round_dtype(stored + ΔW), the sum formed in the arithmetic dtype `work` (that of `delta`'s rows) and rounded
    once to merged's dtype, one block of rows at a time; True when every merged value is finite.

    Blocks are merged by WORKERS threads at once (NumPy releases the GIL in its loops and products), each running BLAS on
    one thread and writing its own blocks. OpenBLAS's own threads would instead fight over the cores with other processes
    (a 4096² layer took 5–11× longer on 2 shared cores), and cover only the products (docs/export.md, Performance).
    """
    rows, cols = stored.shape
    step = max(1, BLOCK_ELEMENTS // cols)
    local = threading.local()

    def merge_block(block: slice) -> bool:
        out = merged.rows(block)
        if merged.dtype == work:  # the sum is the result: formed where it goes
            total = out
        else:
            if getattr(local, "buffer", None) is None:
                local.buffer = np.empty((min(step, rows), cols), work)
            total = local.buffer[: block.stop - block.start]  # (block rows, cols)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: see finite (the state is per thread)
            delta(block, total)  # ΔW rows
            total += stored[block]  # W + ΔW
            if total is not out:
                round_to_dtype(total, merged.dtype, out=out)
        finite = bool(np.isfinite(out).all())
        merged.commit(block, out)
        return finite

    blocks = [slice(start, min(start + step, rows)) for start in range(0, rows, step)]
    with _blas().limit(limits=1, user_api="blas"), ThreadPoolExecutor(min(WORKERS, len(blocks)), "peftref-merge") as pool:
        return all(list(pool.map(merge_block, blocks)))


def work_dtype(precision: str, dtype: np.dtype) -> np.dtype:
    """The arithmetic dtype of a merge: `precision` ("float32" or "float64"), or float64 for a float64 weight."""
    return np.dtype(np.float64) if precision == "float64" or dtype == np.float64 else np.dtype(np.float32)


def merged_weight(
    graph: Graph, located: Located, layer: LayerAdapter, initializer: str, out: Rows | None = None, precision: str = "float32"
) -> np.ndarray | None:
    """W + ΔW(W) formed in `precision` (see :func:`work_dtype`) and rounded once to the initializer's dtype, in the layout
    the initializer stores (W or Wᵀ). A float32 merge that overflows is redone in float64 (ΔW can exceed the largest float32
    where W + ΔW does not); only a result beyond the dtype is an error.

    `out`: where to write it (:class:`FileRows`: its place in the output file); None: returned as a new array.
    """
    use = next(u for u in located.uses if u.initializer == initializer)
    tensor = graph.initializers[initializer]
    dtype = FLOAT_TYPES[tensor.data_type]
    stored = np.asarray(read_array(tensor, graph.base_dir))  # (d_out, d_in) or (d_in, d_out), memory-mapped when external
    W = stored.T if use.transposed else stored  # (d_out, d_in)
    array = np.empty(stored.shape, dtype) if out is None else None
    target = ArrayRows(array) if out is None else out
    work = work_dtype(precision, dtype)
    finite = merge_rows(stored, delta_rows(layer, W, use.transposed, work), target, work)
    if not finite and work != np.float64:
        finite = merge_rows(stored, delta_rows(layer, W, use.transposed), target)
    if not finite:
        exact = W + layer.delta_weight(W if layer.method in DEPENDS_ON_W else None)  # (d_out, d_in) float64, for the message only
        finite = np.isfinite(exact)
        what = (
            f"W + ΔW reaches {np.abs(exact).max():.3g}, beyond {dtype_name(tensor.data_type)}'s largest value {float(ml_dtypes.finfo(dtype).max):.3g}"
            if finite.all()
            else "W + ΔW contains NaN or Inf"
        )
        raise ExportError(f"module {layer.module!r} ({layer.method}): the merged weight (initializer {initializer!r}) is not finite: {what}")
    return array


def saved_values(graph: Graph, saved: SavedTensor, value: np.ndarray) -> np.ndarray:
    """A ``modules_to_save`` tensor in the initializer's layout and dtype (rounded once)."""
    data_type = saved.data_type if saved.initializer is None else graph.initializers[saved.initializer].data_type
    value = np.asarray(value)
    value = value.T if saved.transposed else value
    if data_type not in FLOAT_TYPES:
        return value.astype(helper.tensor_dtype_to_np_dtype(data_type))
    with np.errstate(over="ignore"):
        rounded = round_to_dtype(value.astype(np.float64), FLOAT_TYPES[data_type])
    if not np.isfinite(rounded).all():
        raise ExportError(f"saved module {saved.module!r}: {saved.param} is not finite in {dtype_name(data_type)}")
    return rounded


def _into(out: Rows | None, values: np.ndarray) -> np.ndarray | None:
    if out is None:
        return values
    out.put(values)
    return None


def _is_in_place(graph: Graph, initializer: str, slots) -> bool:
    return set(slots) == set(graph.consumers[initializer]) and initializer not in graph.outside


def _check_separable(graph: Graph, located: Located) -> None:
    """Refuse a weight that reaches the module through a Transpose/Cast whose output other nodes also read."""
    own = {i for use in located.uses for i in (*use.path, use.node)}
    for use in located.uses:
        for link in use.path:
            for output in graph.node(link).output:
                others = [graph.describe(i) for i, _ in graph.consumers[output] if i not in own]
                if others or output in graph.outside:
                    raise ExportError(
                        f"{graph.name}: module {located.module!r}: its weight {use.initializer!r} passes through "
                        f"{graph.describe(link)}, whose output is also read by {others or 'the graph outputs'}; "
                        f"folding it would change those too, so it is refused"
                    )


def _unique_name(graph: Graph, wanted: str, taken: set[str]) -> str:
    name, n = wanted, 1
    while name in graph.initializers or name in graph.producer or name in taken:
        n += 1
        name = f"{wanted}.{n}"
    taken.add(name)
    return name


def plan(graph: Graph, adapter: Adapter, base_weights=None, precision: str = "float32") -> Plan:
    """Locate every adapted weight and saved tensor, and decide each change (in place or a copy)."""
    if not adapter.layers and not adapter.modules_to_save:
        raise ExportError(f"adapter {adapter.source!r} has no layers and no modules to save: nothing to fold")
    both = sorted(set(adapter.layers) & set(adapter.modules_to_save))
    if both:
        raise ExportError(f"adapter {adapter.source!r}: modules {both} are both adapted and saved whole; a module can only be one")
    located = locate(graph, adapter.layers, base_weights)
    saved = [
        entry
        for module, params in adapter.modules_to_save.items()
        for param, value in params.items()
        for entry in locate_saved(graph, module, param, np.shape(value))
    ]
    result = Plan(graph, adapter, located, saved)
    taken: set[str] = set()
    for module, found in located.items():
        layer = adapter.layers[module]
        _check_separable(graph, found)
        by_initializer = defaultdict(list)
        for use in found.uses:
            by_initializer[use.initializer].append(use.slot)
        first = found.uses[0]
        report = LayerReport(
            module, layer.method, found.graph_module, found.located_by, [], "W^T" if first.transposed else "W",
            dtype_name(graph.initializers[first.initializer].data_type), tuple(layer.shape), False,
        )  # fmt: skip
        result.layers.append(report)
        for initializer, slots in by_initializer.items():
            in_place = _is_in_place(graph, initializer, slots)
            target = initializer if in_place else _unique_name(graph, f"{initializer}.peftref.{module}", taken)
            report.initializers.append(target)
            report.shared |= not in_place
            values = lambda out=None, found=found, layer=layer, initializer=initializer: merged_weight(graph, found, layer, initializer, out, precision)  # noqa: E731
            result.changes.append(Change(module, initializer, tuple(slots), in_place, target, values, report))
    for entry in saved:
        value = adapter.modules_to_save[entry.module][entry.param]
        values = lambda out=None, entry=entry, value=value: _into(out, saved_values(graph, entry, value))  # noqa: E731
        label = f"{entry.module}.{entry.param}"
        if entry.initializer is None:
            target = _unique_name(graph, f"{entry.module}.{entry.param}.peftref", taken)
            result.changes.append(Change(label, None, (), False, target, values, add_to=entry.add_to))
            continue
        in_place = _is_in_place(graph, entry.initializer, entry.slots)
        target = entry.initializer if in_place else _unique_name(graph, f"{entry.initializer}.peftref.{entry.module}", taken)
        result.changes.append(Change(label, entry.initializer, entry.slots, in_place, target, values))
    owner: dict[tuple[int, int], str] = {}
    for change in result.changes:
        for slot in change.slots:
            if slot in owner:
                raise ExportError(f"{graph.name}: {owner[slot]!r} and {change.label!r} both change the tensor {graph.describe(slot[0])} reads")
            owner[slot] = change.label
    return result


def apply_changes(model: onnx.ModelProto, graph: Graph, changes: list[Change]) -> dict[int, list[onnx.NodeProto]]:
    """Rewire `model` (a copy of the base) for `changes`: add the copies, point their slots at them, drop dead originals.

    The data of a changed tensor is still the source's (or empty) until :func:`write_model` fills it in. Returns the nodes to
    insert after node i (an Add for a bias added to a MatMul), for :func:`insert_after`.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    after: dict[int, list[onnx.NodeProto]] = defaultdict(list)
    for change in changes:
        if change.in_place:
            continue
        if change.source is None:  # a bias the graph lacks
            value = change.values()
            model.graph.initializer.append(TensorProto(name=change.target, data_type=helper.np_dtype_to_tensor_dtype(value.dtype), dims=value.shape))
            for i in change.add_to:
                node = model.graph.node[i]
                if node.op_type == "Gemm":
                    node.input.append(change.target)  # Gemm's C
                else:
                    output = node.output[0]
                    node.output[0] = f"{output}.peftref.without_bias"
                    after[i].append(helper.make_node("Add", [node.output[0], change.target], [output], name=f"{node.name}.peftref.bias"))
            continue
        copy = model.graph.initializer.add()
        copy.CopyFrom(initializers[change.source])
        copy.name = change.target
        for node, index in change.slots:
            model.graph.node[node].input[index] = change.target
    read = {name for node in model.graph.node for name in node.input} | graph.outside
    dead = [i for i, t in enumerate(model.graph.initializer) if t.name not in read and any(c.source == t.name for c in changes)]
    for i in reversed(dead):
        del model.graph.initializer[i]
    return after


def insert_after(model: onnx.ModelProto, after: dict[int, list[onnx.NodeProto]], first: list[onnx.NodeProto] = ()) -> None:
    """Put `first` at the start of the graph and ``after[i]`` right after node i (keeps the topological order)."""
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(first)
    for i, node in enumerate(nodes):
        model.graph.node.append(node)
        model.graph.node.extend(after.get(i, []))


def set_inline(tensor: onnx.TensorProto, array: np.ndarray) -> None:
    """Store `array` (same shape and dtype) as the tensor's raw data, in the proto."""
    name, dims, data_type = tensor.name, list(tensor.dims), tensor.data_type
    tensor.Clear()
    tensor.name, tensor.data_type = name, data_type
    tensor.dims.extend(dims)
    tensor.raw_data = np.ascontiguousarray(array).view(np.uint8).tobytes()


def attribute_tensors(graph: onnx.GraphProto):
    """The TensorProtos of a graph other than its main initializers: sparse initializers, node attributes, subgraphs."""
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.GRAPH:
                yield from attr.g.initializer
                yield from attribute_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from sub.initializer
                    yield from attribute_tensors(sub)


def _copy_range(src: int, dst: int, offset: int, length: int, at: int) -> None:
    """Copy bytes [offset, offset + length) of file `src` to `at` in file `dst`, in the kernel where it can."""
    end = offset + length
    try:
        while offset < end:
            copied = os.copy_file_range(src, dst, end - offset, offset, at)
            if copied == 0:
                raise ExportError(f"unexpected end of an external data file at byte {offset}")
            offset, at = offset + copied, at + copied
    except OSError:  # not between these file systems (or no copy_file_range): through user space
        while offset < end:
            chunk = os.pread(src, min(CHUNK, end - offset), offset)
            if not chunk:
                raise ExportError(f"unexpected end of an external data file at byte {offset}") from None
            write_all(dst, chunk, at)
            offset, at = offset + len(chunk), at + len(chunk)


def preallocate(fd: int, size: int) -> None:
    """Reserve `size` bytes for the file `fd` (a full disk fails here, before anything is computed); a sparse file where the
    file system cannot reserve."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)


def _aligned(offset: int, size: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT if size >= ALIGN_THRESHOLD else offset


def _set_external(tensor: onnx.TensorProto, location: str, offset: int, size: int) -> None:
    name, dims, data_type = tensor.name, list(tensor.dims), tensor.data_type
    tensor.Clear()
    tensor.name, tensor.data_type = name, data_type
    tensor.dims.extend(dims)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def write_model(result: Plan, model: onnx.ModelProto, path: Path, *, external: bool, progress: bool) -> int:
    """Write the folded model to `path` (and `path`.data when external); return the bytes of tensor data written.

    With external data, a tensor goes to the data file when the base kept it external (or, for a base without external
    data, when it has at least 1 KiB); the layout is fixed first, the proto written, then the data streamed in order.
    """
    graph, by_target = result.graph, {c.target: c for c in result.changes}
    move_inline = external and not _external_files(graph)  # an inline base too large for protobuf: move tensors out
    bar = tqdm(total=len(result.changes), desc="folding", unit="tensor", disable=not progress)

    def compute(change: Change, out: np.ndarray | None = None) -> np.ndarray:
        start = time.perf_counter()
        values = change.values(out)
        if change.report is not None:
            change.report.seconds += time.perf_counter() - start
        bar.update()
        return values

    try:
        if not external:
            for tensor in model.graph.initializer:
                if tensor.name in by_target:
                    set_inline(tensor, compute(by_target[tensor.name]))
            data = model.SerializeToString()
            if len(data) > PROTOBUF_LIMIT:
                raise ExportError(f"the folded model is {len(data) / 2**30:.2f} GiB, over protobuf's 2 GiB: write it with external data")
            path.write_bytes(data)
            return sum(len(t.raw_data) for t in model.graph.initializer)
        location, jobs, offset = path.name + ".data", [], 0
        tensors = [(t, by_target.get(t.name)) for t in model.graph.initializer] + [(t, None) for t in attribute_tensors(model.graph)]
        for tensor, change in tensors:
            if is_external(tensor):
                source = graph.initializers[change.source] if change else tensor
                size = nbytes(source, graph.base_dir)
                job = change or external_location(tensor, graph.base_dir)
            elif move_inline and (size := nbytes(tensor, graph.base_dir)) >= 1024:
                job = change or np.frombuffer(raw_bytes(tensor, graph.base_dir), np.uint8)
            else:
                if change is not None:
                    set_inline(tensor, compute(change))
                continue
            offset = _aligned(offset, size)
            jobs.append((offset, job, tensor))
            _set_external(tensor, location, offset, size)
            offset += size
        path.write_bytes(model.SerializeToString())
        data = path.parent / location
        sources: dict[Path, int] = {}
        fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            preallocate(fd, offset)
            for at, job, tensor in jobs:
                if isinstance(job, Change):  # computed and written block by block
                    compute(job, FileRows(fd, at, tuple(tensor.dims) or (1,), helper.tensor_dtype_to_np_dtype(tensor.data_type)))
                elif isinstance(job, np.ndarray):
                    write_all(fd, job, at)
                else:
                    source, start, length = job
                    if source not in sources:
                        sources[source] = os.open(source, os.O_RDONLY)
                    _copy_range(sources[source], fd, start, length, at)
        finally:
            for handle in (fd, *sources.values()):
                os.close(handle)
        return offset
    finally:
        bar.close()


def _external_files(graph: Graph) -> set[Path]:
    files = set()
    for tensor in (*graph.model.graph.initializer, *attribute_tensors(graph.model.graph)):
        if is_external(tensor):
            files.add(external_location(tensor, graph.base_dir)[0])
    return files


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: Path, graph: Graph, external: bool) -> None:
    """Refuse an output that is a directory, lacks a directory, or would overwrite the input or its data files."""
    if out.is_dir():
        raise ExportError(f"output {out} is a directory; give a file name such as {out / 'model.onnx'}")
    if not out.parent.is_dir():
        what = "is not a directory" if out.parent.exists() else "does not exist"
        raise ExportError(f"output directory {out.parent} {what}")
    inputs = ({graph.path} if graph.path else set()) | _external_files(graph)
    data = out.parent / (out.name + ".data")
    for written in (out, data) if external else (out,):
        for existing in inputs:
            if _same_file(written, existing):
                raise ExportError(f"output {written} is the input file {existing}: write the folded model to a new path")


def _as_adapter(adapter, graph: Graph) -> Adapter:
    if isinstance(adapter, Adapter):
        return adapter
    from ..checkpoints import read_adapter

    return read_adapter(adapter, base=graph.torch_shapes())


def _base_weight_lookup(base_weights):
    """base_weights (None, a mapping key -> array, or safetensors weights on disk) as a mapping."""
    if base_weights is None or isinstance(base_weights, Mapping):
        return base_weights
    from ..checkpoints import base_shapes, base_weight

    return {f"{module}.weight": _Lazy(base_weights, module, base_weight) for module in base_shapes(base_weights)}


@dataclass
class _Lazy:
    """A base weight read from disk only when compared."""

    path: object
    module: str
    read: Callable

    def __array__(self, dtype=None, copy=None):
        value = self.read(self.path, self.module)
        return value if dtype is None else value.astype(dtype)


def fold(
    base,
    adapter,
    out,
    *,
    base_weights=None,
    verify: bool = True,
    inputs: dict | None = None,
    tolerance: float | None = None,
    external_data: bool | None = None,
    precision: str = "float32",
    progress: bool = True,
) -> FoldReport:
    """Fold `adapter` into the ONNX model `base` and write the result to `out`; return a :class:`FoldReport`.

    base: an ``.onnx`` path (external data beside it is fine) or a ModelProto with its data loaded.
    adapter: a :class:`peftref.adapter.Adapter`, or an adapter directory (read with :func:`peftref.checkpoints.read_adapter`).
    base_weights: the base model's weights (safetensors path or a mapping), to find unnamed weights by value and to confirm
    the others. verify: run the onnx checker and compare onnxruntime's output with the base model plus the unmerged
    adapter (:func:`peftref.export.verification.verify`); a failure leaves no output. external_data: write tensors to
    ``<out>.data`` (default: when the base has external data or the result would exceed 2 GiB). precision: the arithmetic
    of W + ΔW before its one rounding to the weight's dtype — "float32" (fast; float64 for float64 weights) or "float64"
    (the exactly rounded reference merge).
    """
    start = time.perf_counter()
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(base, onnx.ModelProto):
        graph = Graph(base)
        if any(is_external(t) for t in (*base.graph.initializer, *attribute_tensors(base.graph))):
            raise ExportError("a ModelProto base must have its external data loaded; pass the .onnx path instead")
    else:
        graph = Graph(load_model(base), Path(base))
    adapter = _as_adapter(adapter, graph)
    result = plan(graph, adapter, _base_weight_lookup(base_weights), precision)
    out = Path(out)
    if external_data is None:
        external_data = bool(_external_files(graph)) or sum(nbytes(t, graph.base_dir) for t in graph.initializers.values()) > PROTOBUF_LIMIT
    check_output(out, graph, external_data)
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    insert_after(model, apply_changes(model, graph, result.changes))
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as err:
        raise ExportError(f"cannot write to {out.parent}: {err.strerror or err}") from None
    try:
        written = write_model(result, model, staging / out.name, external=external_data, progress=progress)
        report = FoldReport(
            graph.name, str(out), adapter.source or type(adapter).__name__, result.layers,
            [{"module": s.module, "param": s.param, "initializer": s.initializer, "located_by": s.located_by} for s in result.saved],
            out.name + ".data" if external_data else None, written, precision,
        )  # fmt: skip
        if verify:
            from .verification import verify as run_verification

            report.verification = run_verification(result, staging / out.name, inputs=inputs, tolerance=tolerance).to_dict()
        if external_data:
            os.replace(staging / (out.name + ".data"), out.parent / (out.name + ".data"))
        os.replace(staging / out.name, out)
    except OSError as err:
        raise ExportError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report

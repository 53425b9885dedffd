r"""Where each adapted layer's weight lives in an ONNX graph exported from torch.

A ``Linear`` computes y = x Wᵀ + b with W ∈ R^{d_out × d_in}. torch 2.13's exporters write it in one of these forms
(seen on nn.Linear stacks, BERT and GPT-2; docs/export.md has the full table):

    2-D input, either exporter                 Gemm(x, W, b, transB=1)           initializer <module>.weight = W
    3-D input, constant-folded                 MatMul(x, Wᵀ) [+ Add(b)]          initializer val_N / onnx::MatMul_N = Wᵀ
    3-D input, not folded                      MatMul(x, Transpose(W))           initializer <module>.weight = W
    GPT-2 Conv1D (stores Wᵀ), dynamo           Gemm(x, Wᵀ, b, transB=0)          initializer <module>.weight = Wᵀ

So a *linear use* is a ``MatMul`` or ``Gemm`` whose right operand B traces back, through ``Transpose(perm=[1, 0])``,
``Cast`` and ``Identity`` nodes, to a 2-D floating-point initializer. The node computes x·B' with

    B' = Wᵀ ∈ R^{d_in × d_out},    B' = T^{(k)}(initializer),   k = #Transpose + transB,

so the initializer holds Wᵀ when k is even and W when k is odd: the layout comes from the graph, never from the shape
(a square W and Wᵀ have the same shape) nor from the adapter's ``fan_in_fan_out``.

Which module a use belongs to, in this order:

1. the node's **scope**: dynamo stores the module path in ``metadata_props["pkg.torch.onnx.name_scopes"]`` (a list of
   nested scopes ending with the op: ``['', 'encoder', …, 'encoder.layer.0.attention.self.query', 'linear']``); the
   TorchScript exporter puts it in the node name (``/encoder/layer.0/attention/self/query/MatMul``);
2. without a scope, the initializer's **name** ``<module>.weight``;
3. without either, by **value** (the base model's state dict, when given) or, failing that, by a **shape** that only one
   unattributed weight has.

Scope comes first because names lie about tied weights: dynamo names a tensor shared by an embedding and ``lm_head``
after one of them (``lm_head.weight``) and uses it in both. Adapter module names are resolved against the graph's
module names with :func:`peftref.checkpoints.resolve_module` (equal, else the one dot-boundary suffix match, so a wrapper's
prefix such as ``model.`` does not matter).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import AttributeProto, helper

from ..checkpoints import CheckpointError, resolve_module
from .tensors import FLOAT_TYPES, ExportError, read_array

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
LINEAR_OPS = ("MatMul", "Gemm")
#: nodes a weight may pass through on its way to a MatMul/Gemm: (flips the layout?)
PASS_THROUGH = {"Transpose": True, "Cast": False, "Identity": False}


def load_model(path: str | Path) -> onnx.ModelProto:
    """The graph of an ONNX file without its external data (a multi-GB model costs only its graph here)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: ONNX model not found")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: any failure here is an unreadable file
        raise ExportError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from None


def torchscript_scope(name: str) -> str | None:
    """The module path in a TorchScript node name, e.g. ``/model/encoder/layer.0/attention/self/query/MatMul``.

    Each component is the module's name reduced to its last non-numeric atom and the indices after it (``layer.0`` for
    ``model.encoder.layer.0``; a name of indices only stays whole). A component ``c.i`` right after a component ``c`` is
    the child ``i`` of that container (a Sequential called as a module): ``/inner/inner.0/Gemm`` is ``inner.0``.
    """
    if not name.startswith("/"):
        return None
    path, previous = "", None
    for component in name[1:].split("/")[:-1]:
        atoms = component.split(".")
        if all(atom.isnumeric() for atom in atoms):
            path = component
        elif len(atoms) > 1 and atoms[0] == previous:
            path = f"{path}.{'.'.join(atoms[1:])}"
        else:
            path = f"{path}.{component}" if path else component
        previous = component
    return path or None


def node_scope(node: onnx.NodeProto) -> str | None:
    """The torch module path a node was exported from, or None: dynamo's name_scopes metadata, else a TorchScript name."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return scopes[-2] or None if isinstance(scopes, list) and len(scopes) >= 2 else None
    return torchscript_scope(node.name)


def attribute(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _subgraph_inputs(graph: onnx.GraphProto) -> Iterator[str]:
    """Every value name read inside `graph` and its subgraphs (outer-scope references included)."""
    for node in graph.node:
        yield from node.input
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _subgraph_inputs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _subgraph_inputs(sub)


@dataclass(frozen=True)
class LinearUse:
    """One MatMul/Gemm computing x Wᵀ from an initializer that holds W or Wᵀ."""

    node: int  # index of the MatMul/Gemm in graph.node
    initializer: str
    transposed: bool  # the initializer holds Wᵀ (d_in, d_out) rather than W (d_out, d_in)
    path: tuple[int, ...]  # Transpose/Cast/Identity nodes from the initializer to the node, initializer side first
    shape: tuple[int, int]  # (d_out, d_in)
    module: str | None  # the module it belongs to, or None when the graph does not say
    located_by: str | None  # "scope" or "name"

    @property
    def slot(self) -> tuple[int, int]:
        """(node, input) that reads the initializer itself."""
        return (self.path[0], 0) if self.path else (self.node, 1)


@dataclass
class Graph:
    """An index of a model's main graph: initializers, producers, consumers, node scopes and linear uses."""

    model: onnx.ModelProto
    path: Path | None = None  # the file it came from; external data lives beside it
    initializers: dict[str, onnx.TensorProto] = field(init=False)
    producer: dict[str, int] = field(init=False)  # value -> the node computing it
    consumers: dict[str, list[tuple[int, int]]] = field(init=False)  # value -> [(node, input)]
    outside: set[str] = field(init=False)  # values also read by subgraphs, or that are graph inputs/outputs
    scopes: list[str | None] = field(init=False)
    uses: list[LinearUse] = field(init=False)

    def __post_init__(self):
        graph = self.model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
        self.consumers = defaultdict(list)
        for i, node in enumerate(graph.node):
            for j, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((i, j))
        self.outside = {v.name for v in graph.output} | {v.name for v in graph.input}
        for node in graph.node:
            for attr in node.attribute:
                subgraphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
                for sub in subgraphs:
                    self.outside.update(_subgraph_inputs(sub))
        self.scopes = [node_scope(node) for node in graph.node]
        self.uses = [use for i in range(len(graph.node)) if (use := self._linear_use(i)) is not None]

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "the ONNX model"

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path(".")

    def node(self, index: int) -> onnx.NodeProto:
        return self.model.graph.node[index]

    def describe(self, index: int) -> str:
        node = self.node(index)
        return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node #{index}"

    def _linear_use(self, index: int) -> LinearUse | None:
        node = self.node(index)
        if node.op_type not in LINEAR_OPS or len(node.input) < 2:
            return None
        flips = 0
        if node.op_type == "Gemm":
            if attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0:
                return None
            flips = int(attribute(node, "transB", 0))
        value, path = node.input[1], []
        while value not in self.initializers:
            producer = self.producer.get(value)
            if producer is None:
                return None
            link = self.node(producer)
            if link.op_type not in PASS_THROUGH or (link.op_type == "Transpose" and list(attribute(link, "perm", [1, 0])) != [1, 0]):
                return None
            flips += PASS_THROUGH[link.op_type]
            path.append(producer)
            value = link.input[0]
        tensor = self.initializers[value]
        if len(tensor.dims) != 2 or tensor.data_type not in FLOAT_TYPES:
            return None
        transposed = flips % 2 == 0
        rows, cols = tensor.dims
        shape = (cols, rows) if transposed else (rows, cols)  # (d_out, d_in)
        scope = self.scopes[index]
        if scope:
            module, located_by = scope, "scope"
        elif value.endswith(".weight"):
            module, located_by = value[: -len(".weight")], "name"
        else:
            module, located_by = None, None
        return LinearUse(index, value, transposed, tuple(reversed(path)), shape, module, located_by)

    def linear_modules(self) -> dict[str, tuple[int, int]]:
        """{module: (d_out, d_in)} of every linear use the graph attributes to a module."""
        return {use.module: use.shape for use in self.uses if use.module}

    def torch_shapes(self) -> dict[str, tuple[int, int]]:
        """{module: shape of its torch ``.weight`` as stored}, for :func:`peftref.checkpoints.read_adapter`'s ``base``.

        A weight the graph names after its module keeps torch's storage (Conv1D: Wᵀ); one the exporter renamed was a
        ``Linear``'s W, transposed only by constant folding: (d_out, d_in).
        """
        shapes = {}
        for use in self.uses:
            if use.module:
                named = use.initializer == f"{use.module}.weight"
                shapes[use.module] = tuple(self.initializers[use.initializer].dims) if named else use.shape
        return shapes

    def aliases(self) -> dict[str, str]:
        """{value: initializer} for the initializers and every value an ``Identity`` chain makes equal to one.

        The TorchScript exporter de-duplicates equal tensors (all-zero biases, say): the one kept is an initializer, and
        each other is ``name = Identity(kept)``, read by its own module's nodes.
        """
        aliases = {name: name for name in self.initializers}
        for node in self.model.graph.node:  # topological order: a chain's start is known before its end
            if node.op_type == "Identity" and node.input[0] in aliases:
                aliases[node.output[0]] = aliases[node.input[0]]
        return aliases

    def compute_type(self, use: LinearUse) -> int:
        """The element type the MatMul/Gemm computes in: the last Cast on the weight's way, else the initializer's."""
        casts = [self.node(i) for i in use.path if self.node(i).op_type == "Cast"]
        return attribute(casts[-1], "to", None) if casts else self.initializers[use.initializer].data_type

    def weight(self, use: LinearUse) -> np.ndarray:
        """W (d_out, d_in) as stored (a read-only view; memory-mapped when external)."""
        stored = read_array(self.initializers[use.initializer], self.base_dir)
        return stored.T if use.transposed else stored


def linear_layers(model: str | Path | onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """{module: (d_out, d_in)} of every linear layer of an exported model whose module the graph names (by scope or name).

    Unlike the initializer names, this sees weights that exporters renamed and transposed (``val_12``, ``onnx::MatMul_15``).
    """
    if isinstance(model, onnx.ModelProto):
        return Graph(model).linear_modules()
    return Graph(load_model(model), Path(model)).linear_modules()


def _matches(name: str, candidate: str) -> bool:
    """Whether `name` and `candidate` name the same module under resolve_module's rule."""
    try:
        resolve_module(name, (candidate,))
    except CheckpointError:
        return False
    return True


def resolve(graph: Graph, module: str, candidates, what: str) -> str | None:
    """The graph module an adapter module names; None when none matches, an ExportError when several do."""
    candidates = set(candidates)
    try:
        return resolve_module(module, candidates, where=f"{graph.name}'s {what}")
    except CheckpointError as err:
        if sum(_matches(module, c) for c in candidates) > 1:
            raise ExportError(str(err)) from None
        return None


@dataclass(frozen=True)
class Located:
    """The weight of one adapted module: its linear uses in the graph and how they were found."""

    module: str  # the adapter's module name
    graph_module: str | None  # the graph's name for it (None when found by value or shape)
    uses: tuple[LinearUse, ...]
    located_by: str  # "scope", "name", "value" or "shape"


def _base_weight(base_weights, module: str, fan_in_fan_out: bool) -> np.ndarray | None:
    """The base state dict's W (d_out, d_in) of `module`, or None when it has no such key."""
    modules = {key[: -len(".weight")] for key in base_weights if key.endswith(".weight")}
    try:
        key = resolve_module(module, modules, where="the base weights") + ".weight"
    except CheckpointError:
        return None
    W = np.asarray(base_weights[key])
    return W.T if fan_in_fan_out else W  # Conv1D stores Wᵀ


def _same_value(graph: Graph, use: LinearUse, W: np.ndarray) -> bool:
    """Whether the graph's weight of `use` equals W (d_out, d_in), compared in the initializer's dtype."""
    stored = graph.weight(use)
    return stored.shape == W.shape and np.array_equal(stored, W.astype(stored.dtype))


def locate(graph: Graph, layers: dict, base_weights=None) -> dict[str, Located]:
    """Find the weight of every adapted module (``layers``: module -> LayerAdapter); a clear error for any that is missing.

    ``base_weights`` (mapping key -> array, torch state-dict layout) identifies by value the weights the graph does not
    name, and confirms the others.
    """
    by_module = defaultdict(list)
    for use in graph.uses:
        if use.module:
            by_module[use.module].append(use)
    located: dict[str, Located] = {}
    unresolved = []
    for module in layers:
        graph_module = resolve(graph, module, by_module, "linear layers")
        if graph_module is None:
            unresolved.append(module)
            continue
        uses = tuple(by_module[graph_module])
        located[module] = Located(module, graph_module, uses, uses[0].located_by)
    unattributed = [use for use in graph.uses if use.module is None]
    for module in unresolved:
        located[module] = _locate_by_value(graph, module, layers[module], unattributed, base_weights, by_module)
    claimed: dict[tuple[int, int], str] = {}
    for module, found in located.items():
        layer = layers[module]
        for use in found.uses:
            if use.shape != tuple(layer.shape):
                raise ExportError(
                    f"{graph.name}: adapter module {module!r} expects a weight of shape (d_out, d_in) = {tuple(layer.shape)}, "
                    f"but the graph's {graph.describe(use.node)} uses initializer {use.initializer!r} as a weight of shape {use.shape}"
                )
            if use.slot in claimed:
                raise ExportError(f"{graph.name}: adapter modules {claimed[use.slot]!r} and {module!r} both name the weight of {graph.describe(use.node)}")
            claimed[use.slot] = module
        if base_weights is not None and found.located_by in ("scope", "name"):
            W = _base_weight(base_weights, module, layer.fan_in_fan_out)
            if W is not None and not _same_value(graph, found.uses[0], W):
                raise ExportError(
                    f"{graph.name}: module {module!r}: the graph's weight (initializer {found.uses[0].initializer!r}) "
                    f"differs from the base weights' value: the graph and the base weights are not the same model"
                )
    return located


def _locate_by_value(graph: Graph, module: str, layer, unattributed: list[LinearUse], base_weights, by_module) -> Located:
    """Tier 3: a weight the graph does not name, found by its value in the base state dict, or by a shape only it has."""
    shape = tuple(layer.shape)
    candidates = [use for use in unattributed if use.shape == shape]
    W = _base_weight(base_weights, module, layer.fan_in_fan_out) if base_weights is not None else None
    if W is not None:
        candidates = [use for use in candidates if _same_value(graph, use, W)]
        located_by = "value"
    else:
        located_by = "shape"
    initializers = sorted({use.initializer for use in candidates})
    if len(initializers) == 1:
        return Located(module, None, tuple(candidates), located_by)
    known = sorted(by_module)
    hint = f"; the graph's linear layers are {known[:8]}{' …' if len(known) > 8 else ''}" if known else ""
    if not initializers:
        how = "by value in the base weights" if W is not None else f"by shape {shape}"
        raise ExportError(f"{graph.name}: adapter module {module!r} not found: no linear layer of that name, and none {how}{hint}")
    advice = "" if W is not None else "; pass the base model's weights (base_weights / --base-weights) to tell them apart by value"
    raise ExportError(f"{graph.name}: adapter module {module!r} is ambiguous: {len(initializers)} unnamed weights match ({initializers[:6]}){advice}")


#: where a parameter enters the ops a saved (``modules_to_save``) module exports to: op -> input index.
PARAMETER_INPUTS = {
    "weight": {"Gather": 0, "Gemm": 1, "MatMul": 1, "LayerNormalization": 1, "Conv": 1, "BatchNormalization": 1},
    "bias": {"Gemm": 2, "LayerNormalization": 2, "Conv": 2, "BatchNormalization": 2},
}


@dataclass(frozen=True)
class SavedTensor:
    """Where one tensor of a ``modules_to_save`` module goes: the initializer and the consumer slots that must see it."""

    module: str
    param: str
    initializer: str | None  # None: a bias the graph lacks, added to the nodes `add_to`
    slots: tuple[tuple[int, int], ...]
    transposed: bool  # write the saved value transposed (a Linear weight the exporter stores as Wᵀ)
    located_by: str  # "name", "scope" (a linear use), "scope+shape", or "added"
    add_to: tuple[int, ...] = ()  # linear nodes (Gemm without C, MatMul) whose output gets the new bias
    data_type: int | None = None  # element type of an added bias


def locate_saved(graph: Graph, module: str, param: str, shape: tuple) -> list[SavedTensor]:
    """Where ``<module>.<param>`` of a saved module is in the graph: by name, as a linear weight, or by scope and shape."""
    shape = tuple(shape)
    aliases = graph.aliases()
    name = resolve(graph, f"{module}.{param}", aliases, "initializers")
    if name is not None:
        graph_module, initializer = name[: -len(param) - 1], aliases[name]
        slots = tuple(s for s in graph.consumers[name] if graph.scopes[s[0]] in (graph_module, None))
        if slots:
            if tuple(graph.initializers[initializer].dims) != shape:
                raise ExportError(f"{graph.name}: saved module {module!r}: {param} has shape {shape}, initializer {initializer!r} has {tuple(graph.initializers[initializer].dims)}")
            return [SavedTensor(module, param, initializer, slots, False, "name")]
    if param == "weight":
        by_module = {use.module for use in graph.uses if use.module}
        graph_module = resolve(graph, module, by_module, "linear layers")
        if graph_module is not None:
            uses = [use for use in graph.uses if use.module == graph_module]
            if any(use.shape != shape for use in uses):
                raise ExportError(f"{graph.name}: saved module {module!r}: weight has shape {shape}, the graph's linear layer {graph_module!r} has (d_out, d_in) = {uses[0].shape}")
            by_initializer = defaultdict(list)
            for use in uses:
                by_initializer[use.initializer].append(use)
            return [SavedTensor(module, param, init, tuple(u.slot for u in group), group[0].transposed, "scope") for init, group in by_initializer.items()]
    graph_module = resolve(graph, module, {s for s in graph.scopes if s}, "module scopes")
    candidates = defaultdict(list)  # initializer -> slots of nodes in the module's scope reading it, with the saved shape
    for i, scope in enumerate(graph.scopes):
        if graph_module is not None and scope == graph_module:
            for j, value in enumerate(graph.node(i).input):
                if value in graph.initializers and tuple(graph.initializers[value].dims) == shape:
                    candidates[value].append((i, j))
    if len(candidates) > 1:
        positions = PARAMETER_INPUTS.get(param, {})
        candidates = {
            init: slots
            for init, slots in candidates.items()
            if any(positions.get(graph.node(i).op_type) == j for i, j in slots)
        }
    if len(candidates) == 1:
        (init, slots), = candidates.items()
        return [SavedTensor(module, param, init, tuple(slots), False, "scope+shape")]
    if not candidates and param == "bias":
        linear = resolve(graph, module, {use.module for use in graph.uses if use.module}, "linear layers")
        uses = [use for use in graph.uses if linear is not None and use.module == linear]
        if uses and all(len(graph.node(u.node).input) < 3 and shape == (u.shape[0],) for u in uses):
            # A zero bias that the exporter's optimizer dropped (dynamo removes Gemm's C = 0): the saved one is added back.
            return [SavedTensor(module, param, None, (), False, "added", tuple(u.node for u in uses), graph.compute_type(uses[0]))]
    if not candidates:
        raise ExportError(f"{graph.name}: saved module {module!r}: no tensor for its {param} (shape {shape}) found in the graph")
    raise ExportError(f"{graph.name}: saved module {module!r}: its {param} (shape {shape}) is ambiguous among initializers {sorted(candidates)[:6]}")

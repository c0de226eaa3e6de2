"""Tracing a Keras model into channel dependency groups (the idea of Torch-Pruning's DependencyGraph, in Keras).

Every output channel of every *producer* (a Dense unit, a Conv filter, an Embedding dimension, an LSTM unit, ...)
is an **atom**. Tracing walks the model's graph once, in topological order and into nested models, and follows the
channel axis of every tensor as a :class:`Layout`: which atom sits at each position of that axis. Layers that act
channel by channel pass the layout on; Flatten / Reshape / Permute move it; Concatenate joins layouts; an
element-wise merge (Add, Multiply, ``x + y``, ...) **ties** the atoms it lines up (union-find), so they can only be
removed together. A class of tied atoms is one removable channel; producers whose atoms share classes form a
**dependency group**.

Where removing a channel could not be exact, tracing **blocks** its atoms with a reason that names the layer: a
softmax or normalization over the channel axis, the model's output, a model input it is tied to, a layer masklab
does not know. A class with a blocked atom is never removed.

What each layer type does is in :mod:`masklab.surgery.rules`; this module only walks the graph and keeps books.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np


@dataclass(frozen=True)
class Layout:
    """The channel axis of a tensor: ``axis`` counts the batch axis as 0; ``atoms[i]`` is the atom at position i."""

    axis: int
    atoms: np.ndarray


@dataclass
class LayerRecord:
    """What tracing learned about one layer (or keras op): the atoms of each weight axis it will slice."""

    layer: object
    rule: object
    path: str                                           # "backbone/conv_1" inside nested models
    slots: dict = field(default_factory=dict)           # slot name -> atoms, e.g. "in", "out", "channels"
    blocks: dict = field(default_factory=dict)          # slot name -> number of equal blocks (grouped conv)
    output: Layout | None = None                        # layout of its first output (first call)
    produced: np.ndarray | None = None                  # atoms it creates: its output channels
    extra: dict = field(default_factory=dict)           # rule-specific facts (e.g. a Reshape's output axis)
    output_id: int | None = None                        # id of its first output tensor in the model's graph
    calls: int = 0

    def all_slots(self) -> dict[str, np.ndarray]:
        """Every sliced axis, its produced channels included as ``"out"``."""
        return self.slots if self.produced is None else {**self.slots, "out": self.produced}

    @property
    def name(self) -> str:
        return self.path


class Atoms:
    """Union-find over atom ids, each atom optionally owned by a producer and blocked with a reason."""

    def __init__(self):
        self.parent: list[int] = []
        self.owner: list[tuple[int, int] | None] = []   # (id(producer layer), channel index)
        self.reason: list[list[str] | None] = []

    def new(self, n: int, owner_layer=None, reason: str | None = None) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.owner.extend([(id(owner_layer), i) for i in range(n)] if owner_layer is not None else [None] * n)
        self.reason.extend([[reason] if reason else None for _ in range(n)])
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Tie ``a[i]`` with ``b[i]`` for every i (equal lengths)."""
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def block(self, atoms, reason: str) -> None:
        """Mark atoms as not removable, with the reason (an atom keeps every distinct reason, in order)."""
        for a in np.asarray(atoms).ravel().tolist():
            if self.reason[a] is None:
                self.reason[a] = [reason]
            elif reason not in self.reason[a]:
                self.reason[a].append(reason)

    def finalize(self) -> tuple[np.ndarray, dict[int, str]]:
        """``root[a]`` for every atom, and the blocking reason of every blocked class (by its root)."""
        root = np.fromiter((self.find(a) for a in range(len(self.parent))), dtype=np.int64,
                           count=len(self.parent))
        reasons: dict[int, list[str]] = {}
        for a, atom_reasons in enumerate(self.reason):
            for reason in atom_reasons or ():
                found = reasons.setdefault(int(root[a]), [])
                if reason not in found:
                    found.append(reason)
        blocked = {c: found[0] + "".join(f"; also: {r}" for r in found[1:3]) for c, found in reasons.items()}
        return root, blocked


def functional_graph(model):
    """The Functional graph behind a built functional or Sequential model; ValueError otherwise."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if graph is None or not hasattr(graph, "_nodes_by_depth"):
        raise ValueError(f"masklab.surgery needs a built functional or Sequential model (Sequential: start it with "
                         f"keras.Input). Received: {type(model).__name__} {getattr(model, 'name', model)!r}")
    return graph


def ordered_nodes(graph) -> list:
    """The graph's nodes in topological order (inputs first), InputLayer nodes left out."""
    nodes = [node for depth in sorted(graph._nodes_by_depth, reverse=True) for node in graph._nodes_by_depth[depth]]
    return [n for n in nodes if not isinstance(n.operation, keras.layers.InputLayer)]


def is_graph_model(op) -> bool:
    """A nested functional or Sequential model (whose layers tracing walks into)."""
    if isinstance(op, keras.Sequential):
        return getattr(op, "_functional", None) is not None
    return isinstance(op, keras.Model) and hasattr(op, "_nodes_by_depth")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Tracer:
    """Walks a model once and builds a :class:`DependencyGraph`. Rules call the methods below."""

    def __init__(self, model, *, exact: bool = True):
        from masklab.surgery import rules  # the rules import this module for Layout

        self.model = model
        self.exact = exact
        self.rules = rules
        self.atoms = Atoms()
        self.records: dict[int, LayerRecord] = {}
        self.layouts: dict[int, Layout] = {}
        self.consumer_inputs: dict[int, tuple] = {}   # id(tensor) -> (tensor, layout): values a consumer reads
        self.inexact: dict[str, str] = {}             # layer path -> what is approximate (exact=False)
        self._walked_models: set[int] = set()
        self._calls: dict[int, int] = {}
        self._count_calls(model)

    def _count_calls(self, model) -> None:
        for node in ordered_nodes(functional_graph(model)):
            self._calls[id(node.operation)] = self._calls.get(id(node.operation), 0) + 1
            if is_graph_model(node.operation) and self._calls[id(node.operation)] == 1:
                self._count_calls(node.operation)

    def is_shared(self, layer) -> bool:
        """Called more than once in the model's graph (other calls, e.g. by ablation sub-models, do not count)."""
        return self._calls.get(id(layer), 0) > 1

    def fixed_slot(self, rec: LayerRecord, name: str, size: int, what: str) -> None:
        """A shared layer reading channels that cannot shrink on this call: tie that to its other calls."""
        if self.is_shared(rec.layer):
            self.slot(rec, name, self.fixed(int(size), f"shared layer {rec.path!r} also reads {what}, whose "
                                                        f"channels cannot be removed"))

    # --- helpers for rules ---------------------------------------------------------------------------------
    def layout(self, tensor) -> Layout | None:
        return self.layouts.get(id(tensor)) if isinstance(tensor, keras.KerasTensor) else None

    def record(self, layer, path: str) -> LayerRecord:
        rec = self.records.get(id(layer))
        if rec is None:
            rec = self.records[id(layer)] = LayerRecord(layer, None, path)
        return rec

    def produce(self, rec: LayerRecord, n: int) -> np.ndarray:
        """The atoms of a producer's ``n`` output channels (the same atoms on every call of a shared layer)."""
        if rec.produced is None:
            rec.produced = self.atoms.new(n, owner_layer=rec.layer)
        elif len(rec.produced) != n:
            raise ValueError(f"layer {rec.path!r} produces {n} channels on one call and {len(rec.produced)} on "
                             f"another")
        return rec.produced

    def fixed(self, n: int, reason: str) -> np.ndarray:
        """Atoms for channels that can never shrink (a model input, a constant)."""
        return self.atoms.new(n, reason=reason)

    def slot(self, rec: LayerRecord, name: str, atoms: np.ndarray, blocks: int = 1) -> None:
        """The layer slices a weight axis by ``atoms``; on a second call of a shared layer the two are tied."""
        atoms = np.asarray(atoms, dtype=np.int64)
        previous = rec.slots.get(name)
        if previous is None:
            rec.slots[name] = atoms
        elif len(previous) == len(atoms):
            self.atoms.union(previous, atoms)
        else:
            self.block(atoms, f"shared layer {rec.path!r} sees {len(atoms)} channels on one call and "
                              f"{len(previous)} on another")
        if blocks > 1:
            rec.blocks[name] = blocks

    def consumes(self, tensor, layout: Layout | None) -> None:
        """Remember a tensor whose channels a consumer reads (the activation criteria measure these)."""
        if layout is not None:
            self.consumer_inputs[id(tensor)] = (tensor, layout)

    def block(self, atoms, reason: str) -> None:
        self.atoms.block(atoms, reason)

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        self.atoms.union(a, b)

    # --- the walk ------------------------------------------------------------------------------------------
    def walk(self, model, prefix: str = "") -> None:
        graph = functional_graph(model)
        for node in ordered_nodes(graph):
            op = node.operation
            if is_graph_model(op):
                self._walk_nested(node, op, prefix)
                continue
            rec = self.record(op, prefix + op.name)
            rec.rule = rec.rule or self.rules.rule_for(op)
            rec.calls += 1
            outputs = rec.rule.trace(self, node, op, rec)
            outputs = list(outputs) + [None] * (len(node.output_tensors) - len(outputs))
            for tensor, layout in zip(node.output_tensors, outputs):
                if layout is None:
                    continue
                size = tensor.shape[layout.axis] if 0 < layout.axis < len(tensor.shape) else None
                if size != len(layout.atoms):  # a safety net: a rule's assumption did not hold
                    self.block(layout.atoms, f"internal check: layer {rec.path!r} ({type(op).__name__}) outputs "
                                             f"shape {tuple(tensor.shape)}, not {len(layout.atoms)} channels on "
                                             f"axis {layout.axis}")
                    continue
                self.layouts[id(tensor)] = layout
            if rec.output_id is None and node.output_tensors:
                rec.output_id = id(node.output_tensors[0])
            if rec.output is None and node.output_tensors:
                rec.output = self.layouts.get(id(node.output_tensors[0]))

    def _walk_nested(self, node, inner, prefix: str) -> None:
        inner_graph = functional_graph(inner)
        outer_inputs = node.arguments.keras_tensors
        if len(outer_inputs) != len(inner_graph.inputs):
            for t in outer_inputs:
                if self.layout(t) is not None:
                    self.block(self.layout(t).atoms, f"nested model {inner.name!r} is called with "
                                                     f"{len(outer_inputs)} tensors for {len(inner_graph.inputs)} inputs")
            return
        first_call = id(inner) not in self._walked_models
        for outer, inner_input in zip(outer_inputs, inner_graph.inputs):
            outer_layout, inner_layout = self.layout(outer), self.layouts.get(id(inner_input))
            if first_call:
                if outer_layout is not None:
                    self.layouts[id(inner_input)] = outer_layout
            elif (outer_layout is None) != (inner_layout is None) or (
                    outer_layout is not None and (outer_layout.axis != inner_layout.axis
                                                  or len(outer_layout.atoms) != len(inner_layout.atoms))):
                for lay in (outer_layout, inner_layout):
                    if lay is not None:
                        self.block(lay.atoms, f"nested model {inner.name!r} is called on inputs whose channels "
                                              f"differ from call to call")
            elif outer_layout is not None:
                self.tie(outer_layout.atoms, inner_layout.atoms)
        if first_call:
            self._walked_models.add(id(inner))
            self.walk(inner, prefix + inner.name + "/")
        for outer_out, inner_out in zip(node.output_tensors, inner_graph.outputs):
            if self.layout(inner_out) is not None:
                self.layouts[id(outer_out)] = self.layout(inner_out)

    def trace(self) -> "DependencyGraph":
        graph = functional_graph(self.model)
        self.walk(self.model)
        for tensor in graph.outputs:
            layout = self.layout(tensor)
            if layout is not None:
                maker = getattr(getattr(tensor, "_keras_history", None), "operation", None)
                where = f"(the output of {maker.name!r})" if maker is not None else repr(tensor.name)
                self.block(layout.atoms, f"they reach the model's output {where}: removing them would change the "
                                         f"output's shape")
        return DependencyGraph(self)


@dataclass
class Group:
    """Producers whose output channels are tied, and the channel classes they share."""

    index: int
    producers: list[LayerRecord]
    classes: np.ndarray          # class roots, in the order of the first producer's channels
    blocked: dict[int, str]      # class root -> why it cannot be removed

    @property
    def names(self) -> list[str]:
        return [p.path for p in self.producers]

    @property
    def removable(self) -> np.ndarray:
        return np.array([c for c in self.classes.tolist() if c not in self.blocked], dtype=np.int64)


class DependencyGraph:
    """The traced model: layouts of its tensors, per-layer slots, and the channel classes (tied atoms)."""

    def __init__(self, tracer: Tracer):
        self.model = tracer.model
        self.exact = tracer.exact
        self.records = tracer.records
        self.layouts = tracer.layouts
        self.consumer_inputs = tracer.consumer_inputs
        self.inexact = tracer.inexact
        self.atoms = tracer.atoms
        self.root, self.blocked = tracer.atoms.finalize()
        self._groups: list[Group] | None = None

    # --- lookup ---------------------------------------------------------------------------------------------
    def record_of(self, layer) -> LayerRecord:
        rec = self.records.get(id(layer))
        if rec is None:
            raise ValueError(f"layer {layer.name!r} is not part of model {self.model.name!r}'s graph")
        return rec

    def output_classes(self, layer) -> np.ndarray:
        """Class of each output channel of ``layer`` (its produced channels, or its output's channel layout)."""
        rec = self.record_of(layer)
        atoms = rec.produced if rec.produced is not None else (rec.output.atoms if rec.output is not None else None)
        if atoms is None:
            raise ValueError(f"layer {rec.path!r} ({type(layer).__name__}) has no output channels that masklab can "
                             f"remove: it neither produces channels (Dense, Conv, Embedding, RNN, "
                             f"MultiHeadAttention, ...) nor passes a producer's channels on")
        return self.root[atoms]

    def producers(self) -> list[LayerRecord]:
        return [rec for rec in self.records.values() if rec.produced is not None]

    # --- groups ---------------------------------------------------------------------------------------------
    def groups(self) -> list[Group]:
        """Dependency groups in graph order: producers tied through shared channel classes."""
        if self._groups is None:
            producers = self.producers()
            parent = list(range(len(producers)))

            def find(i):
                while parent[i] != i:
                    parent[i] = parent[parent[i]]
                    i = parent[i]
                return i

            first_owner: dict[int, int] = {}
            for i, rec in enumerate(producers):
                for c in np.unique(self.root[rec.produced]).tolist():
                    j = first_owner.setdefault(c, i)
                    if find(i) != find(j):
                        parent[max(find(i), find(j))] = min(find(i), find(j))
            members: dict[int, list[int]] = {}
            for i in range(len(producers)):
                members.setdefault(find(i), []).append(i)
            groups = []
            for index, (_, idx) in enumerate(sorted(members.items())):
                recs = [producers[i] for i in idx]
                classes = list(dict.fromkeys(self.root[np.concatenate([r.produced for r in recs])].tolist()))
                blocked = {c: self.blocked[c] for c in classes if c in self.blocked}
                groups.append(Group(index, recs, np.array(classes, dtype=np.int64), blocked))
            self._groups = groups
        return self._groups

    def group_of(self, layer) -> Group | None:
        classes = set(self.output_classes(layer).tolist())
        for group in self.groups():
            if classes & set(group.classes.tolist()):
                return group
        return None

    # --- removal --------------------------------------------------------------------------------------------
    def removed_atoms(self, classes) -> np.ndarray:
        """Boolean over all atoms: is the atom's class among ``classes``?"""
        chosen = np.zeros(len(self.root), dtype=bool)
        chosen[np.asarray(list(classes), dtype=np.int64)] = True
        return chosen[self.root]

    def keep_masks(self, removed: np.ndarray, rec: LayerRecord) -> dict[str, np.ndarray]:
        return {slot: ~removed[atoms] for slot, atoms in rec.all_slots().items()}

    def check_removal(self, classes) -> None:
        """ValueError when removing ``classes`` is not allowed: a blocked class, a producer or tensor left with no
        channel, or unequal removal across the groups of a grouped convolution."""
        classes = list(classes)
        for c in classes:
            if c in self.blocked:
                raise ValueError(self.blocked[c])
        removed = self.removed_atoms(classes)
        for rec in self.records.values():
            if rec.produced is not None and removed[rec.produced].all():
                raise ValueError(f"this would remove every output channel ({len(rec.produced)}) of layer "
                                 f"{rec.path!r}")
            for slot, atoms in rec.all_slots().items():
                if len(atoms) and removed[atoms].all():
                    raise ValueError(f"this would remove every channel ({len(atoms)}) that layer {rec.path!r} "
                                     f"reads or carries")
                blocks = rec.blocks.get(slot, 1)
                if blocks > 1:
                    per_block = removed[atoms].reshape(blocks, -1).sum(axis=1)
                    if len(set(per_block.tolist())) > 1 and isinstance(rec.layer, keras.layers.Bidirectional):
                        raise ValueError(f"layer {rec.path!r} (Bidirectional) needs as many units removed from its "
                                         f"forward as from its backward direction (Keras sizes its output as twice "
                                         f"the forward layer); this removal takes {per_block.tolist()}")
                    if len(set(per_block.tolist())) > 1:
                        raise ValueError(f"layer {rec.path!r} ({type(rec.layer).__name__}, groups={blocks}) needs "
                                         f"the same number of channels removed in each of its {blocks} groups of "
                                         f"{len(atoms) // blocks}; this removal takes {per_block.tolist()}")


def trace(model, *, exact: bool = True) -> DependencyGraph:
    """Trace ``model`` (functional or Sequential, nested models included) into a :class:`DependencyGraph`."""
    return Tracer(model, exact=exact).trace()

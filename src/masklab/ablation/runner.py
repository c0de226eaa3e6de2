"""Running a model with K ablations at once, in one compiled function.

:class:`AblationRunner` walks the model's functional graph node by node (nested models included), as ``predict``
would, and replaces the output ``h`` of every target layer by ``h * m + (1 - m) * r``: ``m`` the KEEP mask of the
ablation (1 keeps a unit, 0 ablates it; on the channel axis, every position), ``r`` the replacement (0, the unit's
mean, or its value on another input). Tensors that do not depend on a target stay ``(n, ...)`` and are computed
once per chunk of inputs; from the first target on they are ``(k * n, ...)``, ablation-major (row ``j * n + i`` is
ablation ``j`` on input ``i``), and a node mixing both kinds (a residual merge) tiles the other operand. So the
layers before the first target run once per input, whatever the number of masks, and residual or concatenating
graphs are handled without any rule per layer.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from masklab.surgery.graph import functional_graph, is_graph_model, ordered_nodes
from masklab.surgery.removal import find_layer
from masklab.surgery.verify import _tensor, model_inputs

REPLACEMENTS = ("zero", "mean", "resample")


class Target:
    """A layer whose output is ablated: its ``units`` (channels) and the channel ``axis`` of its output
    (1 for a ``channels_first`` layer, the last axis otherwise)."""

    def __init__(self, model, layer):
        self.layer = find_layer(model, layer)
        output = self.layer.output
        if isinstance(output, (list, tuple, dict)):
            raise ValueError(f"layer {self.layer.name!r} has several outputs, so which one to ablate is ambiguous. "
                             f"Received: layer={layer!r}")
        shape = tuple(output.shape)
        if len(shape) < 2:
            raise ValueError(f"layer {self.layer.name!r} must output (batch, ..., units) to be ablated unit by "
                             f"unit. Received: output shape {shape}")
        self.axis = 1 if getattr(self.layer, "data_format", None) == "channels_first" and len(shape) > 2 else \
            len(shape) - 1
        if shape[self.axis] is None:
            raise ValueError(f"layer {self.layer.name!r} has an unknown number of units. Received: output shape "
                             f"{shape}")
        self.units = int(shape[self.axis])
        self.shape = shape[1:]  # per sample

    @staticmethod
    def find(model, layer) -> keras.layers.Layer:
        """The layer of ``model`` (nested models searched too) from its object, name or path."""
        return find_layer(model, layer)

    @property
    def name(self) -> str:
        return self.layer.name


def _count_calls(model, layer_ids: set[int], counts: dict[int, int], times: int = 1) -> None:
    graph = functional_graph(model)
    for node in ordered_nodes(graph):
        op = node.operation
        if id(op) in layer_ids:
            counts[id(op)] = counts.get(id(op), 0) + times
        if is_graph_model(op):
            _count_calls(op, layer_ids, counts, times)


def check_targets(model, targets: list[Target]) -> None:
    """Every target is called exactly once in the model's graph; each layer only once among the targets."""
    ids = [id(t.layer) for t in targets]
    if len(set(ids)) != len(ids):
        names = [t.name for t in targets]
        raise ValueError(f"layers must name each layer once. Received: {names}")
    counts: dict[int, int] = {}
    _count_calls(model, set(ids), counts)
    for target in targets:
        calls = counts.get(id(target.layer), 0)
        if calls != 1:
            raise ValueError(f"layer {target.name!r} is called {calls} times in model {model.name!r}; ablating "
                             f"a unit of a shared layer would change all its calls at once, so it is refused. "
                             f"Ablate a layer called once (e.g. the layer after the shared one).")


def _elements(tensor) -> int:
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) == 0:
        return 1
    return int(np.prod([64 if d is None else d for d in shape[1:]], dtype=np.int64))


def _largest(model) -> int:
    graph = functional_graph(model)
    sizes = [_elements(t) for t in graph.inputs]
    for node in ordered_nodes(graph):
        sizes += [_elements(t) for t in keras.tree.flatten(node.output_tensors)]
        if is_graph_model(node.operation):
            sizes.append(_largest(node.operation))
    return max(sizes)


def tensor_sizes(model, targets: list[Target]) -> tuple[int, int]:
    """``(before, after)``: the largest per-sample tensor (values; unknown sizes counted as 64) computed once
    per input, and the largest computed once per ablation and input (from the first target on, in the model's
    top-level order). They set how many inputs and masks go into one compiled call."""
    graph = functional_graph(model)
    target_ids = {id(t.layer) for t in targets}

    def contains_target(op) -> bool:
        return id(op) in target_ids or (is_graph_model(op) and any(contains_target(l) for l in op.layers))

    before, after, reached = max(_elements(t) for t in graph.inputs), 1, False
    for node in ordered_nodes(graph):
        reached = reached or contains_target(node.operation)
        size = max([_elements(t) for t in keras.tree.flatten(node.output_tensors)] +
                   ([_largest(node.operation)] if is_graph_model(node.operation) else []))
        if reached:
            after = max(after, size)
        else:
            before = max(before, size)
    return before, after


class AblationRunner:
    """Runs ``model`` on chunks of inputs with ``k`` ablations of the ``targets`` per call.

    ``modes``: per target, ``"zero"``, ``"constant"`` (a replacement of the target's per-sample shape or
    ``(units,)`` broadcast, given once) or ``"per_sample"`` (a replacement per input, e.g. resample ablation).
    ``argmax=True`` returns the predicted classes ``(k, n)`` of the first output instead of the outputs.
    ``jit_compile=True`` compiles with XLA (TensorFlow backend): faster for dense tails on CPU (the mask product
    fuses with what follows), often slower for convolutions, and each new chunk shape compiles again. The JAX
    backend always compiles (``jax.jit``) and splits the ablations over the devices of an active
    ``keras.distribution`` (:mod:`masklab.ablation.jax_call`).
    """

    def __init__(self, model, targets: list[Target], modes: list[str], argmax: bool = False,
                 jit_compile: bool = False):
        self.model, self.targets, self.modes, self.argmax = model, targets, modes, argmax
        self.jit_compile = jit_compile
        self._positions = {id(t.layer): i for i, t in enumerate(targets)}
        self._compiled: dict = {}

    # --- the graph walk -------------------------------------------------------------------------------------
    def _ablate(self, index: int, value, expanded: bool, k: int, n: int, masks, replacements):
        """``h * m + (1 - m) * r`` for every (mask, input) pair, computed by broadcasting in a ``(k, n, ...)``
        layout (no repeated copy of the masks or of ``h`` is materialized), returned as ``(k * n, ...)``."""
        target, mode = self.targets[index], self.modes[index]
        if masks is None:  # capture mode: nothing ablated
            return value, expanded
        per_sample = tuple(value.shape[1:])
        grid = ops.reshape(value, (k, n) + per_sample) if expanded else value[None]
        mask_shape = [k, 1] + [1] * len(per_sample)
        mask_shape[target.axis + 1] = target.units
        mask = ops.reshape(ops.cast(masks[index], value.dtype), tuple(mask_shape))
        if mode == "zero":
            out = grid * mask
        else:
            replacement = ops.cast(replacements[index], value.dtype)
            if mode == "per_sample":
                replacement = replacement[None]  # (1, n, ...): the same drawn value for every ablation
            out = grid * mask + (1.0 - mask) * replacement
        return ops.reshape(out, (-1,) + per_sample), True

    def _run(self, model, inputs: list, expanded_in: list[bool], k: int, n: int, masks, replacements,
             captured: dict):
        graph = functional_graph(model)
        values = {id(t): v for t, v in zip(graph.inputs, inputs)}
        expanded = {id(t): e for t, e in zip(graph.inputs, expanded_in)}
        for node in ordered_nodes(graph):
            op = node.operation
            sources = [id(t) for t in node.arguments.keras_tensors]
            mixed = any(expanded[s] for s in sources)
            local = {s: (_tile(values[s], k) if mixed and not expanded[s] else values[s]) for s in sources}
            produced_expanded = mixed
            if is_graph_model(op):  # a nested model: its outputs are expanded if a target inside expanded them
                outputs, produced_expanded = self._run(op, [local[s] for s in sources], [mixed] * len(sources), k,
                                                       n, masks, replacements, captured)
            else:
                args, kwargs = node.arguments.fill_in(local)
                outputs = op(*args, **kwargs)
            outputs = keras.tree.flatten(outputs)
            out_expanded = [produced_expanded] * len(outputs)
            if id(op) in self._positions:
                index = self._positions[id(op)]
                captured[index] = outputs[0]
                outputs[0], out_expanded[0] = self._ablate(index, outputs[0], mixed, k, n, masks, replacements)
            for tensor, value, e in zip(node.output_tensors, outputs, out_expanded):
                values[id(tensor)], expanded[id(tensor)] = value, e
        result = [values[id(t)] for t in graph.outputs]
        if not any(expanded[id(t)] for t in graph.outputs):
            return result, False
        return [v if expanded[id(t)] else _tile(v, k) for t, v in zip(graph.outputs, result)], True

    def _forward(self, inputs, masks, replacements):
        n = _size(inputs[0])
        k = 1 if masks is None else _size(masks[0])
        captured: dict = {}
        outputs, expanded = self._run(self.model, list(inputs), [False] * len(inputs), k, n, masks, replacements,
                                      captured)
        if masks is None:
            return [captured[i] for i in range(len(self.targets))], outputs
        if not expanded:  # no output depends on the targets: every ablation gives the intact outputs
            outputs = [_tile(o, k) for o in outputs]
        if self.argmax:
            return ops.reshape(ops.argmax(outputs[0], axis=-1), (k, n))
        return [ops.reshape(o, (k, n) + tuple(o.shape[1:])) for o in outputs]

    def _function(self, key):
        if key not in self._compiled:
            if keras.config.backend() == "tensorflow":
                import tensorflow as tf

                self._compiled[key] = tf.function(self._forward, autograph=False, jit_compile=self.jit_compile)
            elif keras.config.backend() == "jax":  # jax.jit; split over the devices of an active distribution
                from masklab.ablation.jax_call import JaxCall

                self._compiled[key] = JaxCall(self._forward, self.model)
            else:  # torch runs the same ops eagerly
                self._compiled[key] = self._forward
        return self._compiled[key]

    def _call(self, key, *args):
        """Calls differ in n (samples per chunk, the last one smaller) and k (masks per chunk). On TensorFlow the
        function is traced with those leading dimensions left open (k and n are then tensors in ``_forward``), so
        one trace per call structure serves every chunk instead of one trace per shape."""
        function = self._function(key)
        if keras.config.backend() == "tensorflow":
            import tensorflow as tf

            open_batch = tf.nest.map_structure(
                lambda t: None if t is None else tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype), args)
            function.get_concrete_function(*open_batch)  # traced once per structure, then looked up
        return function(*args)

    # --- public ---------------------------------------------------------------------------------------------
    @property
    def devices_used(self) -> int:
        """How many devices the last ablation call ran on: those of an active ``keras.distribution`` on JAX, else 1."""
        return getattr(self._compiled.get("ablate"), "devices_used", 1)

    def run(self, inputs: list, masks: list[np.ndarray], replacements: list):
        """One compiled call: ``inputs`` ``n`` samples per model input, ``masks`` ``(k, units)`` per target."""
        tensors = [_tensor(a) for a in inputs]
        mask_tensors = [ops.convert_to_tensor(m, "float32") for m in masks]
        replacement_tensors = [None if r is None else ops.convert_to_tensor(r) for r in replacements]
        return self._call("ablate", tensors, mask_tensors, replacement_tensors)

    def capture(self, inputs: list):
        """``(target outputs, model outputs)`` of the unablated model on ``inputs``."""
        return self._call("capture", [_tensor(a) for a in inputs], None, None)


def _size(tensor):
    """The batch dimension: an int, or a scalar tensor inside a trace that left it open."""
    size = tensor.shape[0]
    return size if size is not None else ops.shape(tensor)[0]


def _tile(value, k: int):
    """``(n, ...) -> (k * n, ...)``: ``k`` copies along the batch axis, copy-major."""
    return ops.tile(value, (k,) + (1,) * (len(value.shape) - 1))


def input_arrays(model, x, what: str = "x") -> list[np.ndarray]:
    """``x`` as one array per model input, with at least one sample and no NaN / infinite values."""
    if x is None or isinstance(x, (str, bytes)):
        raise ValueError(f"{what} must be an array of model inputs (a list or dict of arrays for several inputs). "
                         f"Received: {what}={x!r}")
    if not isinstance(x, (dict, list, tuple)) and hasattr(x, "shape") and (len(x.shape) == 0 or x.shape[0] == 0):
        raise ValueError(f"{what} must hold at least one sample. Received: shape {tuple(x.shape)}")
    arrays = model_inputs(model, x, what)
    for array, tensor in zip(arrays, model.inputs):
        if np.issubdtype(array.dtype, np.number) and not np.isfinite(array).all():
            raise ValueError(f"{what} contains NaN or infinite values ({int((~np.isfinite(array)).sum())} of "
                             f"{array.size})")
        if "int" in str(tensor.dtype) and np.issubdtype(array.dtype, np.floating) and \
                not np.array_equal(array, np.round(array)):
            name = getattr(getattr(tensor, "_keras_history", None), "operation", tensor).name
            raise ValueError(f"{what} holds non-integer values for the integer input {name!r} "
                             f"({tensor.dtype}; e.g. token ids): they would be truncated. Received: dtype "
                             f"{array.dtype}, first values {array.ravel()[:5].tolist()}")
    return arrays

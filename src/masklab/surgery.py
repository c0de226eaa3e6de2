"""Neuron surgery (seed 004): physically remove units of a Dense layer or filters of a Conv2D layer.

``remove_units(model, layer, units)`` returns a NEW model (the original is untouched) in which ``units`` of
``layer`` no longer exist: its kernel loses those output columns / filters, and the removal is carried downstream
through channel-wise layers (activations, Dropout, BatchNormalization, pooling, ...) and Flatten, to every layer
that consumes the channels (Dense: kernel rows; Conv2D: kernel input channels), whose own outputs keep their
shape. Branching is fine: a tensor feeding two consumers rewrites both.

The guarantee, checked by ``verify_equivalence``: the pruned model computes what the original computes with the
removed channels set to 0 at the input of every consumer, i.e. ``Dense(512, relu) -> NeuronMask`` with those
units masked after the activation. (Behind a BatchNormalization a zeroed channel is not 0 any more, which is why
the mask is defined at the consumers: that is exactly what removal does.)

Where removal cannot be exact, it refuses with a ValueError instead of building a wrong model: the channels reach
a merge (Add, Concatenate, ...), a layer it does not know (Reshape, LayerNormalization, ...), a shared layer, a
nested model, or the model's output; or every unit would go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

PRUNABLE = (keras.layers.Dense, keras.layers.Conv2D)
CONSUMERS = (keras.layers.Dense, keras.layers.Conv2D)
# act on each channel separately and keep the channels on the last axis
CHANNELWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
               keras.layers.PReLU, keras.layers.Dropout,
               keras.layers.SpatialDropout2D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
               keras.layers.AlphaDropout, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
               keras.layers.ZeroPadding2D, keras.layers.Cropping2D, keras.layers.UpSampling2D,
               keras.layers.Identity, keras.layers.BatchNormalization)
GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


@dataclass
class _Plan:
    """What removal changes: the kept channel indices of every affected tensor, and per layer how to slice."""

    target: keras.layers.Layer
    kept: np.ndarray
    tensor_kept: dict = field(default_factory=dict)      # id(KerasTensor) -> kept indices on its last axis
    output_sliced: dict = field(default_factory=dict)    # layer name -> kept output channels (target, BN, ...)
    input_sliced: dict = field(default_factory=dict)     # layer name -> kept input features/channels


# --- choosing units --------------------------------------------------------------------------------------------
def _get_layer(model: keras.Model, layer) -> keras.layers.Layer:
    if isinstance(layer, str):
        names = [l.name for l in model.layers]
        if layer not in names:
            raise ValueError(f"No layer named {layer!r} in model {model.name!r}. Received: layer={layer!r}; "
                             f"layers are {names}")
        return model.get_layer(layer)
    if isinstance(layer, keras.layers.Layer) and any(l is layer for l in model.layers):
        return layer
    raise ValueError(f"layer must be a layer name or a layer of model {model.name!r}. Received: layer={layer!r}")


def unit_count(layer: keras.layers.Layer) -> int:
    """Output units of a Dense layer, filters of a Conv2D layer."""
    if isinstance(layer, keras.layers.Dense):
        return int(layer.units)
    if isinstance(layer, keras.layers.Conv2D):
        return int(layer.filters)
    raise ValueError(f"remove_units handles Dense and Conv2D layers. Received: layer {layer.name!r} of type "
                     f"{type(layer).__name__}")


def validate_units(units, total: int) -> np.ndarray:
    """Explicit unit indices: a non-empty list of unique integers in [0, total), not all of them."""
    raw = np.asarray(list(units) if not isinstance(units, np.ndarray) else units)
    if raw.size == 0:
        raise ValueError(f"units to remove must not be empty. Received: units={list(raw)}")
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"units must be a flat list of integer indices. Received: units={units!r}")
    bad = raw[(raw < 0) | (raw >= total)]
    if bad.size:
        raise ValueError(f"unit indices must lie in [0, {total}). Received out of range: {bad.tolist()}")
    values, counts = np.unique(raw, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"unit indices must be unique. Received duplicates: {values[counts > 1].tolist()}")
    if values.size == total:
        raise ValueError(f"cannot remove every unit ({total}) of a layer. Received: {values.size} indices")
    return values


def units_by_weight_norm(model: keras.Model, layer, n: int, *, ord: int = 2) -> np.ndarray:
    """The ``n`` units (filters) whose incoming kernel has the smallest L1 (``ord=1``) or L2 norm, sorted."""
    layer = _get_layer(model, layer)
    total = unit_count(layer)
    if ord not in (1, 2):
        raise ValueError(f"ord must be 1 or 2. Received: ord={ord!r}")
    kernel = np.asarray(layer.kernel).reshape(-1, total)
    norms = np.abs(kernel).sum(axis=0) if ord == 1 else np.sqrt((kernel ** 2).sum(axis=0))
    return np.sort(np.argsort(norms, kind="stable")[:_count(n, total)])


def units_by_activation(model: keras.Model, layer, x: np.ndarray, n: int, batch_size: int = 1024) -> np.ndarray:
    """The ``n`` units (filters) with the lowest mean output on ``x`` (over samples and positions), sorted.
    Pass training or validation data, never the test split."""
    layer = _get_layer(model, layer)
    total = unit_count(layer)
    probe = keras.Model(model.inputs, layer.output)
    activation = probe.predict(x, batch_size=batch_size, verbose=0)
    mean = activation.reshape(-1, total).mean(axis=0)
    return np.sort(np.argsort(mean, kind="stable")[:_count(n, total)])


def _count(n, total: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n < total:
        raise ValueError(f"n must be an integer in [1, {total}). Received: n={n!r}")
    return int(n)


# --- planning --------------------------------------------------------------------------------------------------
def _graph(model: keras.Model):
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if graph is None or not hasattr(graph, "_nodes_by_depth"):
        raise ValueError(f"remove_units needs a built Sequential (with an Input) or functional model. Received: "
                         f"{type(model).__name__} {model.name!r}")
    nodes = [node for depth in sorted(graph._nodes_by_depth, reverse=True) for node in graph._nodes_by_depth[depth]]
    return graph, nodes


def _plan(model: keras.Model, layer: keras.layers.Layer, kept: np.ndarray) -> _Plan:
    graph, nodes = _graph(model)
    plan = _Plan(layer, kept)
    plan.output_sliced[layer.name] = kept
    for node in nodes:
        op = node.operation
        if isinstance(op, keras.layers.InputLayer):
            continue
        inputs = [t for t in node.input_tensors if id(t) in plan.tensor_kept]
        if op is layer:
            if len(layer._inbound_nodes) > 1:
                raise ValueError(f"layer {layer.name!r} is shared (called {len(layer._inbound_nodes)} times): "
                                 f"removing its units is ambiguous")
            for t in node.output_tensors:
                plan.tensor_kept[id(t)] = kept
            continue
        if not inputs:
            continue
        name, kind = op.name, type(op).__name__
        if len(op._inbound_nodes) > 1:
            raise ValueError(f"the removed units reach shared layer {name!r} ({kind}); cannot rewrite it exactly")
        if len(node.input_tensors) > 1:
            raise ValueError(f"the removed units reach {name!r} ({kind}), which combines several tensors; "
                             f"remove_units does not rewrite merges. Received: layer={layer.name!r}")
        channels = plan.tensor_kept[id(inputs[0])]
        if isinstance(op, CONSUMERS):
            plan.input_sliced[name] = channels
            continue
        if isinstance(op, keras.layers.BatchNormalization) and op.axis not in (-1, len(inputs[0].shape) - 1):
            raise ValueError(f"BatchNormalization {name!r} normalizes axis {op.axis}, not the channel axis")
        if isinstance(op, CHANNELWISE) or kind == "NeuronMask" or isinstance(op, GLOBAL_POOLING):
            if isinstance(op, keras.layers.PReLU) or isinstance(op, keras.layers.BatchNormalization) or \
                    kind == "NeuronMask":
                plan.output_sliced[name] = channels
            out = channels
        elif isinstance(op, keras.layers.Flatten):
            shape = inputs[0].shape[1:]
            if None in shape:
                raise ValueError(f"Flatten {name!r} has an unknown input shape {shape}; cannot map channels")
            positions = int(np.prod(shape[:-1]))
            out = (np.arange(positions)[:, None] * shape[-1] + channels[None, :]).ravel()
        else:
            raise ValueError(f"the removed units reach layer {name!r} of type {kind}, which remove_units does not "
                             f"know how to rewrite exactly. Received: layer={layer.name!r}")
        for t in node.output_tensors:
            plan.tensor_kept[id(t)] = out
    output_ids = {id(t) for t in graph.outputs}
    reached = [t for t in graph.outputs if id(t) in plan.tensor_kept]
    if output_ids & set(plan.tensor_kept):
        raise ValueError(f"the units of {layer.name!r} reach the model's output {[t.name for t in reached]} "
                         f"without a consuming Dense/Conv2D layer: removing them would change the output shape")
    return plan


# --- rewriting -------------------------------------------------------------------------------------------------
def _sliced_config(layer: keras.layers.Layer, plan: _Plan) -> dict:
    config = layer.get_config()
    if layer is plan.target:
        config["units" if isinstance(layer, keras.layers.Dense) else "filters"] = int(plan.kept.size)
    if type(layer).__name__ == "NeuronMask" and config.get("initial_mask") is not None:
        config["initial_mask"] = np.asarray(config["initial_mask"])[plan.output_sliced[layer.name]].tolist()
    return config


def _sliced_weights(layer: keras.layers.Layer, plan: _Plan) -> list[np.ndarray]:
    weights = [np.asarray(w) for w in layer.get_weights()]
    name = layer.name
    if name in plan.input_sliced:  # consumer: drop kernel input rows / channels
        kept = plan.input_sliced[name]
        weights[0] = weights[0][kept] if weights[0].ndim == 2 else weights[0][:, :, kept, :]
    if name in plan.output_sliced:  # target (kernel columns, bias) or a per-channel layer (all its vectors)
        kept = plan.output_sliced[name]
        weights = [w[..., kept] for w in weights]
    return weights


def remove_units(model: keras.Model, layer, units) -> keras.Model:
    """A new model without ``units`` of ``layer`` (a Dense layer's units or a Conv2D layer's filters).

    ``layer``: name or layer object; ``units``: indices to remove (``units_by_weight_norm`` /
    ``units_by_activation`` choose them). The original model is not modified. Raises ValueError for bad input
    and wherever the removal could not be exact (see the module docstring).
    """
    layer = _get_layer(model, layer)
    total = unit_count(layer)
    removed = validate_units(units, total)
    kept = np.setdiff1d(np.arange(total), removed)
    plan = _plan(model, layer, kept)
    affected = {plan.target.name, *plan.output_sliced, *plan.input_sliced}

    def clone(original: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(original, keras.Model):
            if original.name in affected:
                raise ValueError(f"the removed units reach nested model {original.name!r}; not supported")
            return original.__class__.from_config(original.get_config())
        config = _sliced_config(original, plan) if original.name in affected else original.get_config()
        return original.__class__.from_config(config)

    pruned = keras.models.clone_model(model, clone_function=clone)
    for original in model.layers:
        if original.weights:
            pruned.get_layer(original.name).set_weights(_sliced_weights(original, plan)
                                                        if original.name in affected else original.get_weights())
    return pruned


# --- the guarantee ---------------------------------------------------------------------------------------------
def masked_outputs(model: keras.Model, layer, units, x) -> np.ndarray:
    """The ORIGINAL model's outputs with ``units`` of ``layer`` set to 0 on every tensor they travel through
    (so at the input of every consumer), computed by running the model's graph node by node."""
    layer = _get_layer(model, layer)
    total = unit_count(layer)
    kept = np.setdiff1d(np.arange(total), validate_units(units, total))
    plan = _plan(model, layer, kept)
    graph, nodes = _graph(model)
    values = {id(t): keras.ops.convert_to_tensor(v) for t, v in zip(graph.inputs, _as_list(x))}
    for node in nodes:
        if isinstance(node.operation, keras.layers.InputLayer):
            continue
        args, kwargs = node.arguments.fill_in(values)
        outputs = node.operation(*args, **kwargs)
        for t, value in zip(node.output_tensors, _as_list(outputs)):
            if id(t) in plan.tensor_kept:
                keep = np.zeros(t.shape[-1], np.float32)
                keep[plan.tensor_kept[id(t)]] = 1.0
                value = value * keras.ops.cast(keep, value.dtype)
            values[id(t)] = value
    outputs = [np.asarray(keras.ops.convert_to_numpy(values[id(t)])) for t in graph.outputs]
    return outputs[0] if len(outputs) == 1 else outputs


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def verify_equivalence(original: keras.Model, pruned: keras.Model, layer, units, x) -> float:
    """Max |pruned(x) - original(x) with ``units`` of ``layer`` masked to 0| over all outputs (inference mode).
    A correct removal gives float round-off (about 1e-6); the caller picks the tolerance."""
    reference = _as_list(masked_outputs(original, layer, units, x))
    result = _as_list(pruned.predict(x, verbose=0, batch_size=len(_as_list(x)[0])))
    return float(max(np.abs(np.asarray(r) - np.asarray(p)).max() for r, p in zip(reference, result)))


def parameter_table(model: keras.Model) -> list[dict]:
    """Per layer: name, type, output shape and parameter count (for before/after tables)."""
    return [{"layer": l.name, "type": type(l).__name__, "output_shape": str(tuple(l.output.shape[1:])),
             "parameters": int(l.count_params())} for l in model.layers]

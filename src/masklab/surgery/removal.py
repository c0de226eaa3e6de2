"""Removing chosen units: ``remove_units`` (channels and their dependency group), ``remove_heads`` (attention
heads), and the checks that a removal is what it claims (``masked_outputs``, ``verify_equivalence``)."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from masklab.surgery.graph import DependencyGraph, functional_graph, is_graph_model, trace
from masklab.surgery.rebuild import rebuild
from masklab.surgery.verify import MaskedRunner, max_abs_difference, self_check, validate_batch_size


# --- finding layers ---------------------------------------------------------------------------------------------
def all_layers(model, prefix: str = ""):
    """``(path, layer)`` for every layer of ``model``, nested models' layers included (``"backbone/conv_1"``)."""
    for layer in model.layers:
        yield prefix + layer.name, layer
        if is_graph_model(layer):
            yield from all_layers(layer, prefix + layer.name + "/")


def find_layer(model: keras.Model, layer) -> keras.layers.Layer:
    """A layer of ``model`` (nested models searched too) from its object, its name or its path
    ``"outer/inner"``; ValueError naming what was received and what exists."""
    functional_graph(model)
    layers = list(all_layers(model))
    if isinstance(layer, keras.layers.Layer):
        if any(candidate is layer for _, candidate in layers):
            return layer
        raise ValueError(f"Layer {layer.name!r} is not a layer of model {model.name!r}. Received: layer={layer!r}")
    if not isinstance(layer, str):
        raise ValueError(f"layer must be a layer name, path or object. Received: layer={layer!r}")
    matches = [candidate for path, candidate in layers if path == layer]
    if not matches:
        matches = [candidate for path, candidate in layers if path.rsplit("/", 1)[-1] == layer]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        paths = [path for path, candidate in layers if any(candidate is m for m in matches)]
        raise ValueError(f"Several layers are named {layer!r}: {paths}. Pass the path or the layer object.")
    raise ValueError(f"No layer named {layer!r} in model {model.name!r}. Received: layer={layer!r}; layers are "
                     f"{[path for path, _ in layers][:60]}{' ...' if len(layers) > 60 else ''}")


# --- units ------------------------------------------------------------------------------------------------------
def validate_units(units, total: int, what: str = "units", layer: str | None = None) -> np.ndarray:
    """Explicit indices: a non-empty list of unique integers in [0, total), not all of them. Sorted."""
    if isinstance(units, (int, np.integer)) and not isinstance(units, bool):
        raise ValueError(f"{what} must be a list of indices; to remove index {units} pass [{units}] (to choose "
                         f"how many, see units_by_weight_norm). Received: {what}={units!r}")
    try:
        raw = np.asarray(list(units) if not isinstance(units, np.ndarray) else units)
    except TypeError:
        raise ValueError(f"{what} must be a list of integer indices. Received: {what}={units!r}") from None
    if raw.size == 0:
        raise ValueError(f"{what} to remove must not be empty. Received: {what}={list(raw)}")
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer) or raw.dtype == bool:
        raise ValueError(f"{what} must be a flat list of integer indices. Received: {what}={units!r}")
    bad = raw[(raw < 0) | (raw >= total)]
    if bad.size:
        raise ValueError(f"{what} indices must lie in [0, {total}). Received out of range: {bad.tolist()}")
    values, counts = np.unique(raw, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"{what} indices must be unique. Received duplicates: {values[counts > 1].tolist()}")
    if values.size == total:
        owner = f" of {layer!r}" if layer else ""
        raise ValueError(f"cannot remove every one of the {total} {what}{owner}. Received: {values.size} indices")
    return values


def _classes_to_remove(graph: DependencyGraph, layer, units) -> set[int]:
    """The channel classes that removing ``units`` of ``layer``'s output takes, checked for exactness."""
    if isinstance(layer, keras.layers.InputLayer):
        raise ValueError(f"layer {layer.name!r} is the model's input: its channels cannot be removed")
    rec = graph.record_of(layer)
    classes = graph.output_classes(layer)
    units = validate_units(units, len(classes), layer=rec.path)
    chosen = set(classes[units].tolist())
    covered = np.flatnonzero(np.isin(classes, list(chosen)))
    if not np.array_equal(covered, units):
        extra = np.setdiff1d(covered, units).tolist()
        raise ValueError(f"cannot remove units {units.tolist()} of {rec.path!r} alone: they are tied to its units "
                         f"{extra} (e.g. a depthwise multiplier or a merge of the layer's output with itself); "
                         f"remove those too")
    try:
        graph.check_removal(chosen)
    except ValueError as error:
        raise ValueError(f"cannot remove units {_short(units)} of {rec.path!r} exactly: {error}") from None
    return chosen


def _short(units: np.ndarray) -> str:
    values = units.tolist()
    return str(values) if len(values) <= 12 else f"[{', '.join(map(str, values[:12]))}, ...] ({len(values)} units)"


def approximate_layers(graph: DependencyGraph, removed: np.ndarray) -> list[str]:
    """The layers sliced only approximately (exact=False) by this removal."""
    return [rec.path for rec in graph.records.values() if rec.path in graph.inexact
            and any(not keep.all() for keep in graph.keep_masks(removed, rec).values())]


def finish(graph: DependencyGraph, removed: np.ndarray, pruned: keras.Model, *, heads: dict | None = None,
           check: bool = True, exact: bool = True) -> keras.Model:
    """Checks and warnings common to every removal: the self-check on random inputs, what exact=False changed,
    and Keras quirks the new model would hit."""
    approximate = approximate_layers(graph, removed)
    measured = self_check(graph, removed, pruned, heads=heads, exact=exact) if check else None
    if approximate:
        how_much = "" if measured is None else f" (max difference {measured[0]:.3g} on random inputs, outputs up " \
                                               f"to {measured[1]:.3g})"
        warnings.warn(f"exact=False: the pruned model differs from the masked original{how_much}: {approximate} "
                      f"normalize over fewer channels. Measure it on your data with verify_equivalence.",
                      stacklevel=3)
    _warn_eager_channels_first_bias(graph.model, pruned)
    if type(graph.model) not in (keras.Sequential,) and isinstance(graph.model, keras.Model) and \
            type(graph.model).__name__ != "Functional":
        warnings.warn(f"{type(graph.model).__name__} is a subclass of keras.Model: the pruned model is a plain "
                      f"functional model (its custom methods, e.g. train_step, are not carried over)", stacklevel=3)
    return pruned


def _warn_eager_channels_first_bias(original: keras.Model, pruned: keras.Model) -> None:
    """Keras 3.15 adds a channels_first conv bias along the width when the width equals the channel count, in
    eager calls (``model(x)``; ``predict`` is right). Warn when pruning creates that coincidence."""
    before = {path: layer for path, layer in all_layers(original)}
    hit = []
    for path, layer in all_layers(pruned):
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                              keras.layers.DepthwiseConv2D)) and getattr(layer, "data_format", "") == \
                "channels_first" and getattr(layer, "use_bias", False):
            shape = layer.output.shape
            old = before.get(path)
            if shape[-1] == shape[1] and (old is None or old.output.shape[-1] != old.output.shape[1]):
                hit.append(path)
    if hit:
        warnings.warn(f"{hit}: channels_first convolutions whose output width now equals their channel count. "
                      f"Keras 3.15 adds their bias along the wrong axis in eager calls (model(x)); predict() and "
                      f"compiled calls are right.", stacklevel=4)


def remove_units(model: keras.Model, layer, units, *, exact: bool = True, check: bool = True) -> keras.Model:
    """A NEW model without output channels ``units`` of ``layer``, and without every channel tied to them.

    ``layer``: a name, path (``"backbone/conv_1"``) or layer object of any layer whose output carries
    removable channels: a producer (Dense, Conv1D/2D/3D incl. grouped, Conv*Transpose, SeparableConv,
    Embedding, LSTM/GRU/SimpleRNN, MultiHeadAttention's output) or a layer that passes them on (BatchNorm,
    DepthwiseConv, ...). ``units``: indices on its channel axis (the last axis, axis 1 for channels_first).
    Channels tied to them by element-wise merges (a residual Add, a squeeze-and-excitation Multiply, ...) go too,
    from every producer of the dependency group (see :func:`dependency_group`).

    The guarantee: the new model computes what the original computes with the removed channels set to 0 at the
    input of every consumer (:func:`verify_equivalence`). For recurrent layers, a removed unit's hidden state is 0
    at every step, in the recurrence too. Where that cannot hold, ValueError names the layer and why.
    ``exact=False`` also slices the scale/offset of LayerNormalization / GroupNormalization over the channel
    axis; the result then differs from the masked original (a warning says where and by how much).
    ``check``: compare the new model with the masked original on two random inputs before returning it
    (RuntimeError if an exact removal differs).
    """
    _validate_flag(exact, "exact")
    _validate_flag(check, "check")
    layer = find_layer(model, layer)
    graph = trace(model, exact=exact)
    chosen = _classes_to_remove(graph, layer, units)
    removed = graph.removed_atoms(chosen)
    return finish(graph, removed, rebuild(graph, removed), check=check, exact=exact)


def _validate_flag(value, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")


def dependency_group(model: keras.Model, layer) -> list[str]:
    """Paths of every producer whose output channels are coupled with ``layer``'s (``layer`` included, if it is a
    producer), in graph order: removing channel j of one removes channel j of all of them."""
    layer = find_layer(model, layer)
    graph = trace(model)
    group = graph.group_of(layer)
    return [] if group is None else group.names


def _heads_keep(layer, heads) -> np.ndarray:
    if type(layer) is not keras.layers.MultiHeadAttention:
        raise ValueError(f"remove_heads needs a keras.layers.MultiHeadAttention layer. Received: layer "
                         f"{layer.name!r} of type {type(layer).__name__}")
    total = int(layer.num_heads)
    keep = np.ones(total, dtype=bool)
    keep[validate_units(heads, total, what="heads", layer=layer.name)] = False
    return keep


def remove_heads(model: keras.Model, layer, heads, *, check: bool = True) -> keras.Model:
    """A NEW model whose MultiHeadAttention ``layer`` has lost ``heads``: their query/key/value projections and
    their rows of the output projection. Equal to the original with those heads' outputs set to 0
    (``verify_equivalence(original, pruned, layer, None, x, heads=heads)``). Refused when the layer returns its
    attention scores (one map per head: their shape would change)."""
    _validate_flag(check, "check")
    layer = find_layer(model, layer)
    keep = _heads_keep(layer, heads)
    graph = trace(model)
    if graph.record_of(layer).extra.get("returns_scores"):
        raise ValueError(f"cannot remove heads of {layer.name!r}: it returns its attention scores (one map per "
                         f"head), whose shape would change")
    removed = graph.removed_atoms([])
    heads_keep = {id(layer): keep}
    return finish(graph, removed, rebuild(graph, removed, extra_keep={id(layer): {"heads": keep}}),
                  heads=heads_keep, check=check)


def masked_outputs(model: keras.Model, layer, units, x, *, heads=None, batch_size: int = 256):
    """The ORIGINAL model's outputs on ``x`` with ``units`` of ``layer`` (and every channel tied to them) set to 0
    on every tensor that carries them; with ``heads=`` (and ``units=None``), those attention heads' outputs set
    to 0. The reference that a correct pruned model reproduces."""
    layer = find_layer(model, layer)
    graph = trace(model)
    if heads is not None:
        if units is not None:
            raise ValueError(f"pass units or heads, not both. Received: units={units!r}, heads={heads!r}")
        runner = MaskedRunner(graph, heads={id(layer): _heads_keep(layer, heads)})
    else:
        runner = MaskedRunner(graph, graph.removed_atoms(_classes_to_remove(graph, layer, units)))
    outputs = runner(x, batch_size=validate_batch_size(batch_size))
    return outputs[0] if len(outputs) == 1 else outputs


def verify_equivalence(original: keras.Model, pruned: keras.Model, layer, units, x, *, heads=None,
                       batch_size: int = 256) -> float:
    """Max |pruned(x) - original(x) with ``units`` of ``layer`` masked to 0| over all outputs (inference mode).
    A correct removal gives float round-off (about 1e-6 relative); the caller picks the tolerance."""
    reference = masked_outputs(original, layer, units, x, heads=heads, batch_size=batch_size)
    return max_abs_difference(reference if isinstance(reference, list) else [reference], pruned, x, batch_size)


# --- choosing units ---------------------------------------------------------------------------------------------
def unit_count(layer) -> int:
    """Output channels of a producer: Dense / RNN units, Conv filters, Embedding output_dim, attention output."""
    for attribute in ("units", "filters", "output_dim"):
        if isinstance(getattr(layer, attribute, None), (int, np.integer)):
            return int(getattr(layer, attribute))
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return int(layer.output_dense.kernel.shape[-1])
    raise ValueError(f"unit_count handles layers that produce channels (Dense, Conv, Embedding, RNN, "
                     f"MultiHeadAttention). Received: layer {layer.name!r} of type {type(layer).__name__}")


def _count(n, total: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n < total:
        raise ValueError(f"n must be an integer in [1, {total}). Received: n={n!r}")
    return int(n)


def units_by_weight_norm(model: keras.Model, layer, n: int, *, ord: int = 2) -> np.ndarray:
    """The ``n`` output channels of a producer whose weights (kernel column / filter) have the smallest L1
    (``ord=1``) or L2 norm, sorted."""
    layer = find_layer(model, layer)
    if ord not in (1, 2):
        raise ValueError(f"ord must be 1 or 2. Received: ord={ord!r}")
    rec = trace(model).record_of(layer)
    if not getattr(rec.rule, "producer", False):
        raise ValueError(f"units_by_weight_norm needs a layer that produces channels. Received: layer "
                         f"{rec.path!r} of type {type(layer).__name__}")
    weights = rec.rule.output_weights(layer)
    norms = np.abs(weights).sum(axis=1) if ord == 1 else np.sqrt((weights.astype(np.float64) ** 2).sum(axis=1))
    return np.sort(np.argsort(norms, kind="stable")[:_count(n, len(norms))])


def units_by_activation(model: keras.Model, layer, x, n: int, batch_size: int = 256) -> np.ndarray:
    """The ``n`` output channels of ``layer`` with the lowest mean absolute output on ``x`` (over samples and
    positions; the ``"activation"`` criterion of :func:`prune`), sorted. Pass training data, never the test
    split."""
    layer = find_layer(model, layer)
    graph = trace(model)
    rec = graph.record_of(layer)
    if rec.output is None:
        raise ValueError(f"layer {rec.path!r} has no channel axis that masklab follows")
    _, absolute, _, count = MaskedRunner(graph, watched={rec.output_id}).statistics(x, batch_size)[rec.output_id]
    mean = absolute / np.maximum(count, 1)
    return np.sort(np.argsort(mean, kind="stable")[:_count(n, len(mean))])


def parameter_table(model: keras.Model) -> list[dict]:
    """Per layer: name, type, output shape and parameter count (for before/after tables)."""
    return [{"layer": l.name, "type": type(l).__name__, "output_shape": str(tuple(l.output.shape[1:])),
             "parameters": int(l.count_params())} for l in model.layers]

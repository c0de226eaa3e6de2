"""Switch units of a trained model's layer off and measure what happens, batched.

Works on any Keras model given a layer (name or object) with a ``(batch, units)`` output, typically a Dense
layer with its activation: the model is split at that layer into ``head`` (inputs -> layer output) and ``tail``
(layer output -> predictions); the head runs once, the masks multiply its output, the tail runs on all masked
copies in large batches. Masks are KEEP masks (1 keeps a unit, 0 switches it off), applied after the layer's
activation.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
import pandas as pd

from masklab.layers.neuron_mask import NeuronMask, validate_mask

STRATEGIES = ("random", "lowest_activation", "highest_activation", "smallest_weight_norm")
# elements (rows x units) of masked hidden activations handled per tail call: ~64 MB of float32
_CHUNK_ELEMENTS = 1 << 24


def check_inputs(x, what: str = "x") -> np.ndarray:
    """Model inputs as an array with at least one sample and no NaN / infinite values; ValueError otherwise."""
    if x is None or isinstance(x, (str, bytes, dict)) or not hasattr(x, "__len__"):
        raise ValueError(f"{what} must be an array of model inputs. Received: {what} of type {type(x).__name__}")
    array = np.asarray(x)
    if array.ndim == 0 or len(array) == 0:
        raise ValueError(f"{what} must hold at least one sample. Received: shape {array.shape}")
    if np.issubdtype(array.dtype, np.number) and not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values ({int((~np.isfinite(array)).sum())} of "
                         f"{array.size})")
    return array


def get_layer(model: keras.Model, layer) -> keras.layers.Layer:
    """The layer object for a name or a layer of ``model``; ValueError naming the model's layers if absent."""
    if isinstance(layer, keras.layers.Layer):
        if not any(candidate is layer for candidate in model.layers):
            raise ValueError(f"Layer {layer.name!r} is not a layer of model {model.name!r}. "
                             f"Its layers: {[l.name for l in model.layers]}")
        return layer
    names = [l.name for l in model.layers]
    if layer not in names:
        raise ValueError(f"Model {model.name!r} has no layer named {layer!r}. Its layers: {names}")
    return model.get_layer(layer)


def split_model(model: keras.Model, layer) -> tuple[keras.Model, keras.Model, int]:
    """``(head, tail, units)``: ``head`` maps the model inputs to ``layer``'s output, ``tail`` maps that output to
    the model outputs. Both share the original weights. The output must be ``(batch, units)`` and everything
    downstream must depend on the inputs only through it."""
    layer = get_layer(model, layer)
    shape = layer.output.shape
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"Layer {layer.name!r} must output (batch, units) to be masked unit by unit. "
                         f"Received: output shape {tuple(shape)}")
    head = keras.Model(model.inputs, layer.output, name=f"{model.name}_head")
    try:
        tail = keras.Model(layer.output, model.outputs, name=f"{model.name}_tail")
    except ValueError as exc:
        raise ValueError(f"The outputs of {model.name!r} depend on its inputs through other paths than layer "
                         f"{layer.name!r}, so masking that layer alone is not defined here: {exc}") from exc
    return head, tail, int(shape[-1])


def hidden_activations(model: keras.Model, layer, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``(N, units)`` output of ``layer`` (after its activation) for inputs ``x``."""
    head, _, _ = split_model(model, layer)
    return np.asarray(head.predict(check_inputs(x), batch_size=batch_size, verbose=0))


def predict_with_masks(model: keras.Model, layer, x: np.ndarray, masks: np.ndarray,
                       batch_size: int | None = None) -> np.ndarray:
    """Predictions for every mask on every input: ``(K, N, outputs)``.

    ``masks``: ``(K, units)`` KEEP masks. The head runs once on ``x``; the tail runs on the ``K * N`` masked
    activations in chunks of ``batch_size`` rows (default: about 16 M activations per chunk). No model is
    rebuilt per mask and there is no Python loop over masks. Layers downstream of ``layer`` act as usual: a
    :class:`NeuronMask` there still applies its own stored mask.
    """
    head, tail, units = split_model(model, layer)
    if masks is None:
        raise ValueError(f"masks must be a (K, {units}) array of KEEP masks. Received: masks=None")
    masks = validate_mask(masks, units, what="masks")
    masks = masks.reshape(-1, units)
    if len(masks) == 0:
        raise ValueError(f"masks must hold at least one mask. Received: shape {masks.shape}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None. Received: batch_size={batch_size!r}")
    hidden = np.asarray(head.predict(check_inputs(x), batch_size=4096, verbose=0), dtype=np.float32)
    n, k = len(hidden), len(masks)
    rows = batch_size or max(n, _CHUNK_ELEMENTS // units)
    masks_per_chunk = max(1, rows // max(n, 1))
    outputs = []
    for start in range(0, k, masks_per_chunk):
        chunk = masks[start:start + masks_per_chunk, None, :] * hidden[None, :, :]  # (k', N, units)
        flat = chunk.reshape(-1, units)
        outputs.append(np.asarray(tail.predict_on_batch(flat)) if len(flat) <= rows
                       else np.asarray(tail.predict(flat, batch_size=rows, verbose=0)))
    predictions = np.concatenate(outputs)
    return predictions.reshape(k, n, -1)


def with_mask_input(model: keras.Model, layer) -> keras.Model:
    """A functional model ``[inputs, masks] -> outputs`` with a :class:`NeuronMask` after ``layer`` that takes
    one KEEP mask per input (``(batch, units)``) or one shared (``(1, units)``); weights are shared with
    ``model``."""
    head, tail, units = split_model(model, layer)
    if len(model.inputs) != 1:
        raise ValueError(f"with_mask_input needs a single-input model. Received: {len(model.inputs)} inputs")
    inputs = keras.Input(model.inputs[0].shape[1:], name="inputs")
    masks = keras.Input((units,), name="masks")
    masked = NeuronMask(name=f"{get_layer(model, layer).name}_mask")([head(inputs), masks])
    return keras.Model([inputs, masks], tail(masked), name=f"{model.name}_masked")


def unit_scores(model: keras.Model, layer, strategy: str, reference_x: np.ndarray | None = None,
                seed: int = 0) -> np.ndarray:
    """``(units,)`` scores; the units with the highest scores are switched off first.

    ``random``: a random permutation from ``seed``. ``lowest_activation`` / ``highest_activation``: minus / plus
    the mean activation on ``reference_x`` (training data: never the split you score on).
    ``smallest_weight_norm``: minus the L2 norm of each unit's incoming weights (the layer's kernel columns).
    """
    layer_obj = get_layer(model, layer)
    _, _, units = split_model(model, layer_obj)
    mean_activation = (_mean_activation(model, layer_obj, reference_x)
                       if strategy in ("lowest_activation", "highest_activation") else None)
    return _scores(strategy, layer_obj, units, mean_activation, seed)


def _mean_activation(model: keras.Model, layer, reference_x) -> np.ndarray:
    """Mean activation of each unit on ``reference_x``: the ranking of the activation-based strategies."""
    if reference_x is None:
        raise ValueError("The activation-ranked strategies (lowest_activation, highest_activation) rank units by "
                         "their mean activation on reference data; pass reference_x (training data, never the "
                         "evaluation split). Received: reference_x=None")
    return hidden_activations(model, layer, check_inputs(reference_x, "reference_x")).mean(axis=0)


def _scores(strategy: str, layer: keras.layers.Layer, units: int, mean_activation, seed: int) -> np.ndarray:
    if strategy == "random":
        return np.random.default_rng(seed).permutation(units).astype(np.float64)
    if strategy == "lowest_activation":
        return -np.asarray(mean_activation, dtype=np.float64)
    if strategy == "highest_activation":
        return np.asarray(mean_activation, dtype=np.float64)
    if strategy == "smallest_weight_norm":
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            raise ValueError(f"strategy 'smallest_weight_norm' needs a layer with a kernel. Received: layer "
                             f"{layer.name!r} of type {type(layer).__name__}")
        kernel = np.asarray(keras.ops.convert_to_numpy(kernel), dtype=np.float64)
        return -np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
    raise ValueError(f"Unknown strategy. Expected one of {STRATEGIES}. Received: strategy={strategy!r}")


def masks_from_scores(scores: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """``(len(fractions), units)`` KEEP masks switching off the ``round(fraction * units)`` highest-scored units
    (ties: lower index first)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0 or not np.isfinite(scores).all():
        raise ValueError(f"scores must be a non-empty (units,) array of finite numbers. Received: shape "
                         f"{scores.shape}, {int((~np.isfinite(scores)).sum())} not finite")
    _check_fractions(fractions)
    units = len(scores)
    order = np.argsort(-scores, kind="stable")
    counts = np.round(np.asarray(fractions, dtype=np.float64) * units).astype(int)
    ranks = np.empty(units, dtype=int)
    ranks[order] = np.arange(units)
    return (ranks[None, :] >= counts[:, None]).astype(np.float32)  # rank < count -> off


def _check_fractions(fractions) -> np.ndarray:
    if fractions is None or isinstance(fractions, (str, bytes)) or np.ndim(fractions) != 1:
        raise ValueError(f"fractions must be a list of values in [0, 1]. Received: fractions={fractions!r}")
    values = np.asarray(list(fractions), dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError(f"fractions must be a non-empty list of values in [0, 1]. Received: {values.tolist()}")
    return values


def ablation_curve(model: keras.Model, layer, x: np.ndarray, y: np.ndarray, fractions: Iterable[float],
                   strategies: Iterable[str] = STRATEGIES, repeats: int = 5, seed: int = 0,
                   reference_x: np.ndarray | None = None) -> pd.DataFrame:
    """Accuracy on ``(x, y)`` when a fraction of ``layer``'s units is switched off, per strategy.

    Tidy: one row per (fraction, strategy, repeat) with ``n_off``, ``accuracy`` and ``agreement`` (share of
    predictions equal to the unmasked model's). ``random`` is repeated ``repeats`` times with seeds drawn from
    ``seed``; the deterministic strategies have one row per fraction (``repeat`` 0). All masks of all
    strategies go through one :func:`predict_with_masks` call.
    """
    fractions = _check_fractions(fractions)
    strategies = [strategies] if isinstance(strategies, str) else list(strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"strategies must be taken from {STRATEGIES}. Received: {strategies}")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer. Received: repeats={repeats!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    x = check_inputs(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length. Received: {len(x)} and {len(y)}")
    layer = get_layer(model, layer)
    _, _, units = split_model(model, layer)
    mean_activation = (_mean_activation(model, layer, reference_x)
                       if {"lowest_activation", "highest_activation"} & set(strategies) else None)
    repeat_seeds = np.random.SeedSequence(seed).generate_state(repeats)
    blocks, rows = [], []
    for strategy in strategies:
        for repeat in range(repeats if strategy == "random" else 1):
            scores = _scores(strategy, layer, units, mean_activation, int(repeat_seeds[repeat]))
            masks = masks_from_scores(scores, fractions)
            blocks.append(masks)
            rows += [dict(fraction=f, n_off=int(units - m.sum()), strategy=strategy, repeat=repeat)
                     for f, m in zip(fractions, masks)]
    all_masks = np.concatenate([np.ones((1, units), np.float32)] + blocks)  # row 0: nothing switched off
    predicted = predict_with_masks(model, layer, x, all_masks).argmax(axis=-1)  # (K, N)
    table = pd.DataFrame(rows)
    table["accuracy"] = (predicted[1:] == np.asarray(y)[None, :]).mean(axis=1)
    table["agreement"] = (predicted[1:] == predicted[0][None, :]).mean(axis=1)
    return table

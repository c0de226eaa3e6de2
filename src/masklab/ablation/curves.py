"""Ablation curves: accuracy as a growing fraction of units is ablated, in an order given by a strategy."""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
import pandas as pd

from masklab.ablation.core import activations, check_labels, check_positive, check_seed, stream, targets_of
from masklab.ablation.runner import Target, input_arrays

STRATEGIES = ("random", "lowest_activation", "highest_activation", "smallest_weight_norm",
              "highest_selectivity", "lowest_selectivity", "highest_importance", "lowest_importance")
_NEEDS_REFERENCE = {"lowest_activation", "highest_activation", "highest_selectivity", "lowest_selectivity",
                    "highest_importance", "lowest_importance"}
_NEEDS_LABELS = {"highest_selectivity", "lowest_selectivity", "highest_importance", "lowest_importance"}


def unit_scores(model: keras.Model, layer, strategy: str, reference_x=None, seed: int = 0,
                reference_y=None) -> np.ndarray:
    """``(units,)`` scores; the units with the highest scores are ablated first.

    ``random``: a random permutation from ``seed``. ``lowest_activation`` / ``highest_activation``: minus / plus
    the mean activation on ``reference_x``. ``smallest_weight_norm``: minus the L2 norm of each unit's incoming
    weights (the kernel's output columns). ``highest_selectivity`` / ``lowest_selectivity``: plus / minus the
    class selectivity on ``(reference_x, reference_y)``. ``highest_importance`` / ``lowest_importance``: plus /
    minus the accuracy drop when the unit alone is ablated on ``(reference_x, reference_y)``. Reference data is
    training (or validation) data: never the split the curve is measured on.
    """
    target = targets_of(model, layer)[0]
    return _scores(model, target, strategy, reference_x, reference_y, check_seed(seed))


def _scores(model, target: Target, strategy: str, reference_x, reference_y, seed: int) -> np.ndarray:
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy. Expected one of {STRATEGIES}. Received: strategy={strategy!r}")
    if strategy == "random":
        return np.random.default_rng(seed).permutation(target.units).astype(np.float64)
    if strategy == "smallest_weight_norm":
        kernel = getattr(target.layer, "kernel", None)
        if kernel is None:
            raise ValueError(f"strategy 'smallest_weight_norm' needs a layer with a kernel. Received: layer "
                             f"{target.name!r} of type {type(target.layer).__name__}")
        kernel = np.asarray(keras.ops.convert_to_numpy(kernel), dtype=np.float64)
        if kernel.shape[-1] != target.units:
            raise ValueError(f"strategy 'smallest_weight_norm' needs a kernel with one column per unit. Received: "
                             f"kernel shape {kernel.shape} for {target.units} units of {target.name!r}")
        return -np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
    if reference_x is None:
        raise ValueError(f"strategy {strategy!r} ranks units on reference data; pass reference_x (training data, "
                         f"never the evaluation split). Received: reference_x=None")
    reference = input_arrays(model, reference_x, "reference_x")
    if strategy in ("lowest_activation", "highest_activation"):
        values = np.asarray(activations(model, target.layer, reference), np.float64)
        mean = values.mean(axis=tuple(a for a in range(values.ndim) if a != target.axis))
        return mean if strategy == "highest_activation" else -mean
    if reference_y is None:
        raise ValueError(f"strategy {strategy!r} needs the reference labels: pass reference_y. Received: "
                         f"reference_y=None")
    labels = check_labels(reference_y, len(reference[0]), what="reference_y")
    from masklab.ablation.units import class_selectivity, single_unit_ablation

    if strategy.endswith("selectivity"):
        score = class_selectivity(model, target.layer, reference, labels)
    else:
        score = single_unit_ablation(model, target.layer, reference, labels)["accuracy_drop"].to_numpy()
    return np.asarray(score, np.float64) if strategy.startswith("highest") else -np.asarray(score, np.float64)


def masks_from_scores(scores, fractions: Sequence[float]) -> np.ndarray:
    """``(len(fractions), units)`` KEEP masks ablating the ``round(fraction * units)`` highest-scored units
    (ties: lower index first)."""
    if scores is None or isinstance(scores, (str, bytes)):
        raise ValueError(f"scores must be a (units,) array of numbers. Received: scores={scores!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0 or not np.isfinite(scores).all():
        raise ValueError(f"scores must be a non-empty (units,) array of finite numbers. Received: shape "
                         f"{scores.shape}, {int((~np.isfinite(scores)).sum())} not finite")
    fractions = _check_fractions(fractions)
    units = len(scores)
    order = np.argsort(-scores, kind="stable")
    counts = np.round(fractions * units).astype(int)
    ranks = np.empty(units, dtype=int)
    ranks[order] = np.arange(units)
    return (ranks[None, :] >= counts[:, None]).astype(np.float32)  # rank < count -> ablated


def _check_fractions(fractions) -> np.ndarray:
    if fractions is None or isinstance(fractions, (str, bytes)) or np.ndim(fractions) != 1:
        raise ValueError(f"fractions must be a list of values in [0, 1]. Received: fractions={fractions!r}")
    values = np.asarray(list(fractions), dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError(f"fractions must be a non-empty list of values in [0, 1]. Received: {values.tolist()}")
    return values


def ablation_curve(model: keras.Model, layer, x, y, fractions: Iterable[float],
                   strategies: Iterable[str] = STRATEGIES[:4], repeats: int = 5, seed: int = 0,
                   reference_x=None, reference_y=None, replacement="zero",
                   batch_size: int | None = None) -> pd.DataFrame:
    """Accuracy on ``(x, y)`` when a fraction of the units is ablated, per strategy.

    ``layer``: one layer, or a list of layers for a cumulative ablation across all of them (as Morcos et al.):
    each fraction ablates ``round(fraction * units)`` units of every listed layer, ranked within that layer.
    Tidy: one row per (fraction, strategy, repeat) with ``n_off`` (units ablated over all layers), ``accuracy``
    and ``agreement`` (share of predictions equal to the unablated model's). ``random`` is repeated
    ``repeats`` times with seeds drawn from ``seed``; the other strategies have one row per fraction
    (``repeat`` 0). Every mask of every strategy goes through one streamed pass (:func:`predict_with_masks`).
    """
    fractions = _check_fractions(fractions)
    strategies = [strategies] if isinstance(strategies, str) else list(strategies or ())
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"strategies must be taken from {STRATEGIES}. Received: {strategies}")
    repeats, seed = check_positive(repeats, "repeats"), check_seed(seed)
    arrays = input_arrays(model, x)
    labels = check_labels(y, len(arrays[0]), what="y")
    if len(labels) != len(arrays[0]):
        raise ValueError(f"x and y must have the same length. Received: {len(arrays[0])} and {len(labels)}")
    targets = targets_of(model, list(layer) if isinstance(layer, (list, tuple)) else layer)
    repeat_seeds = np.random.SeedSequence(seed).generate_state(repeats)
    blocks: list[list[np.ndarray]] = [[np.ones((1, t.units), np.float32)] for t in targets]  # row 0: intact
    rows = []
    for strategy in strategies:
        fixed = None if strategy == "random" else [_scores(model, t, strategy, reference_x, reference_y, 0)
                                                   for t in targets]
        for repeat in range(repeats if strategy == "random" else 1):
            if fixed is None:
                layer_seeds = np.random.SeedSequence(int(repeat_seeds[repeat])).generate_state(len(targets))
                scores = [_scores(model, t, "random", None, None, int(s)) if len(targets) > 1 else
                          _scores(model, t, "random", None, None, int(repeat_seeds[repeat]))
                          for t, s in zip(targets, layer_seeds)]
            else:
                scores = fixed
            masks = [masks_from_scores(s, fractions) for s in scores]
            for block, m in zip(blocks, masks):
                block.append(m)
            off = sum(t.units - m.sum(axis=1) for t, m in zip(targets, masks))
            rows += [dict(fraction=f, n_off=int(o), strategy=strategy, repeat=repeat) for f, o in zip(fractions, off)]
    all_masks = [np.concatenate(b) for b in blocks]
    predicted = np.empty((len(all_masks[0]), len(labels)), np.int64)
    for ks, ns, result, _ in stream(model, targets, all_masks, arrays, replacement=replacement,
                                    reference_x=reference_x, seed=seed, argmax=True, batch_size=batch_size):
        predicted[ks, ns] = result
    table = pd.DataFrame(rows)
    table["accuracy"] = (predicted[1:] == labels[None, :]).mean(axis=1)
    table["agreement"] = (predicted[1:] == predicted[0][None, :]).mean(axis=1)
    return table


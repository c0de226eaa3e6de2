"""Importance of every channel class of a dependency group: LOWER scores are removed first.

- ``"l1"`` / ``"l2"``: norm of the weights that create the channel, over every producer of the group (a Dense
  kernel column, a Conv filter, ...; for l2 the root of the summed squares);
- ``"bn_scale"``: sum of |gamma| of the BatchNormalization layers that carry the channel (network slimming);
  groups without one fall back to ``"l2"`` and say so;
- ``"activation"``: mean |value| of the channel at every consumer input that reads it, on data ``x``;
- ``"apoz"``: average percentage of zeros there (Hu et al. 2016): channels that are mostly 0 go first
  (score = -APoZ);
- ``"random"``: uniform scores from ``seed``.

``x`` must be training data: the choice of what to remove is model selection.
"""

from __future__ import annotations

import numpy as np

from masklab.surgery.graph import DependencyGraph, Group
from masklab.surgery.rules import BatchNormRule
from masklab.surgery.rules.base import weight_array
from masklab.surgery.verify import MaskedRunner

CRITERIA = ("l1", "l2", "bn_scale", "activation", "apoz", "random")
DATA_CRITERIA = ("activation", "apoz")


def _class_index(group: Group) -> dict[int, int]:
    return {c: i for i, c in enumerate(group.classes.tolist())}


def weight_norms(graph: DependencyGraph, group: Group, ord: int) -> np.ndarray:
    index = _class_index(group)
    total = np.zeros(len(group.classes))
    for rec in group.producers:
        weights = np.asarray(rec.rule.output_weights(rec.layer), dtype=np.float64)
        per_channel = np.abs(weights).sum(axis=1) if ord == 1 else (weights ** 2).sum(axis=1)
        np.add.at(total, [index[c] for c in graph.root[rec.produced].tolist()], per_channel)
    return total if ord == 1 else np.sqrt(total)


def bn_scales(graph: DependencyGraph, group: Group) -> np.ndarray | None:
    index = _class_index(group)
    total, found = np.zeros(len(group.classes)), False
    for rec in graph.records.values():
        if isinstance(rec.rule, BatchNormRule) and "channels" in rec.slots:
            roots = graph.root[rec.slots["channels"]]
            inside = np.isin(roots, group.classes)   # a BatchNorm after a Concatenate carries several groups
            if inside.any():
                gamma = rec.layer.gamma
                values = np.abs(weight_array(gamma)) if gamma is not None else np.ones(len(roots))
                np.add.at(total, [index[c] for c in roots[inside].tolist()], values[inside])
                found = True
    return total if found else None


def activation_statistics(graph: DependencyGraph, x, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """Per atom, over every consumer input carrying it, on ``x``: sum of |value|, number of exact zeros, number
    of values."""
    n_atoms = len(graph.root)
    sums, zeros, counts = np.zeros(n_atoms), np.zeros(n_atoms), np.zeros(n_atoms)
    measured = MaskedRunner(graph, watched=set(graph.consumer_inputs)).statistics(x, batch_size=batch_size)
    for tensor_id, (_, absolute, zero, count) in measured.items():
        atoms = graph.consumer_inputs[tensor_id][1].atoms
        np.add.at(sums, atoms, absolute)
        np.add.at(zeros, atoms, zero)
        np.add.at(counts, atoms, count)
    return sums, zeros, counts


def group_scores(graph: DependencyGraph, groups: list[Group], criterion: str, *, x=None, seed: int = 0,
                 batch_size: int = 256) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """``({group index: scores in group.classes order}, {group index: criterion actually used})``."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}. Received: criterion={criterion!r}")
    scores, used = {}, {}
    stats = activation_statistics(graph, x, batch_size) if criterion in DATA_CRITERIA else None
    rng = np.random.default_rng(seed)
    for group in groups:
        used[group.index] = criterion
        if criterion in ("l1", "l2"):
            scores[group.index] = weight_norms(graph, group, 1 if criterion == "l1" else 2)
        elif criterion == "bn_scale":
            values = bn_scales(graph, group)
            if values is None:
                values, used[group.index] = weight_norms(graph, group, 2), "l2 (no BatchNormalization)"
            scores[group.index] = values
        elif criterion == "random":
            scores[group.index] = rng.random(len(group.classes))
        else:
            sums, zeros, counts = stats
            per_class = np.zeros((3, len(group.classes)))
            index = _class_index(group)
            member = np.isin(graph.root, group.classes)
            idx = [index[c] for c in graph.root[member].tolist()]
            for row, values in enumerate((sums, zeros, counts)):
                np.add.at(per_class[row], idx, values[member])
            with np.errstate(invalid="ignore", divide="ignore"):
                mean, apoz = per_class[0] / per_class[2], per_class[1] / per_class[2]
            # a channel that no consumer reads carries nothing: it scores as silent (0 mean, 100 % zeros)
            if criterion == "activation":
                scores[group.index] = np.nan_to_num(mean, nan=0.0)
            else:
                scores[group.index] = -np.nan_to_num(apoz, nan=1.0)
    return scores, used

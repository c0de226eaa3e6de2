"""Whole-model structural pruning: rank the channels of every dependency group, remove the lowest, rebuild.

``prune(model, 0.3)`` traces the model into dependency groups, scores each group's channels by a criterion
(:mod:`masklab.surgery.criteria`), removes a fraction of them per group (``scope="local"``) or by one ranking of
normalized scores over the whole model (``scope="global"``), and returns a :class:`PruneResult` with the new model
and a report of every group: what was removed, or why the group was left alone (the layer that blocks it).
The model's inputs and outputs are never pruned; every group keeps at least one channel.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd

from masklab.surgery.criteria import CRITERIA, DATA_CRITERIA, group_scores
from masklab.surgery.graph import DependencyGraph, Group, trace
from masklab.surgery.macs import layer_macs
from masklab.surgery.rebuild import rebuild
from masklab.surgery.removal import all_layers, approximate_layers, finish
from masklab.surgery.verify import differs, measure, model_inputs, validate_batch_size

SCOPES = ("local", "global")


@dataclass
class PruneResult:
    """What :func:`prune` returns.

    ``model``: the pruned model (a new one; the original is untouched). ``report``: one row per dependency group.
    ``removed``: ``{producer path: removed output-channel indices}``. ``max_abs_difference``: max |pruned(x) -
    original(x) with the removed channels masked| on the check samples (``None`` without ``x``), and
    ``max_abs_output`` the largest |original output| there, for scale.
    """

    model: keras.Model
    report: pd.DataFrame
    removed: dict[str, np.ndarray]
    amount: float
    criterion: str
    scope: str
    exact: bool
    params_before: int
    params_after: int
    macs_before: int | None      # None when the model's input sizes are not fixed
    macs_after: int | None
    seconds: float               # tracing, scoring and rebuilding (the check on x comes on top)
    max_abs_difference: float | None = None
    max_abs_output: float | None = None
    approximate_layers: list[str] = field(default_factory=list)

    @property
    def relative_difference(self) -> float | None:
        if self.max_abs_difference is None:
            return None
        return self.max_abs_difference / max(self.max_abs_output, 1e-12)

    def __repr__(self) -> str:
        summary = self.summary()
        macs = "" if self.macs_before is None else f", MACs {self.macs_before:,} -> {self.macs_after:,}"
        check = "" if self.max_abs_difference is None else f", relative difference {self.relative_difference:.1e}"
        return (f"PruneResult({summary['groups_pruned']}/{summary['groups']} groups pruned by {self.criterion!r} "
                f"({self.scope}, amount {self.amount:g}): params {self.params_before:,} -> {self.params_after:,}"
                f"{macs}{check}; .model, .report, .removed, .summary())")

    def summary(self) -> dict:
        """Scalars for tables and metrics files (JSON-friendly)."""
        pruned = self.report["status"] == "pruned"
        return {"amount": self.amount, "criterion": self.criterion, "scope": self.scope, "exact": self.exact,
                "groups": int(len(self.report)), "groups_pruned": int(pruned.sum()),
                "channels_before": int(self.report["channels_before"].sum()),
                "channels_after": int(self.report["channels_after"].sum()),
                "params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "max_abs_difference": self.max_abs_difference, "relative_difference": self.relative_difference,
                "approximate_layers": list(self.approximate_layers)}


def _validate(amount, criterion, scope, x, seed, exact, check_samples, batch_size):
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.floating)) or \
            not math.isfinite(float(amount)) or not 0 < float(amount) < 1:
        raise ValueError(f"amount must be a fraction in (0, 1) of the channels to remove. Received: "
                         f"amount={amount!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}. Received: criterion={criterion!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}. Received: scope={scope!r}")
    if not isinstance(exact, (bool, np.bool_)):
        raise ValueError(f"exact must be True or False. Received: exact={exact!r}")
    if criterion in DATA_CRITERIA and x is None:
        raise ValueError(f"criterion {criterion!r} measures activations: pass x (training data). Received: x=None")
    if not exact and x is None:
        raise ValueError("exact=False changes what the model computes: pass x so the difference is measured and "
                         "reported. Received: x=None")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer. Received: seed={seed!r}")
    if isinstance(check_samples, bool) or not isinstance(check_samples, (int, np.integer)) or check_samples < 1:
        raise ValueError(f"check_samples must be a positive integer. Received: check_samples={check_samples!r}")
    validate_batch_size(batch_size)


def block_partition(graph: DependencyGraph, group: Group):
    """The blocks of classes in which removal must be equal (grouped convolutions), ``None`` if free, or a
    string saying why the constraints conflict."""
    partitions = set()
    for rec in graph.records.values():
        for slot, blocks in rec.blocks.items():
            roots = graph.root[rec.all_slots()[slot]]
            if np.isin(roots, group.classes).any():
                partitions.add(tuple(tuple(row) for row in roots.reshape(blocks, -1).tolist()))
    if not partitions:
        return None
    if len(partitions) > 1:
        return "grouped convolutions with different group structures read these channels"
    return [np.array(block, dtype=np.int64) for block in next(iter(partitions))]


def _choose(group: Group, scores: np.ndarray, k: int, partition) -> np.ndarray:
    """The ``k`` removable classes with the lowest scores (equal numbers per block under a partition)."""
    index = {c: i for i, c in enumerate(group.classes.tolist())}
    removable = set(group.removable.tolist())
    blocks = partition or [group.classes]
    per_block = k // len(blocks)
    chosen = []
    for block in blocks:
        candidates = [c for c in block.tolist() if c in removable]
        per_block = min(per_block, len(candidates), len(block) - 1)
    for block in blocks:
        candidates = sorted((c for c in block.tolist() if c in removable), key=lambda c: (scores[index[c]], index[c]))
        chosen += candidates[:per_block]
    return np.array(chosen, dtype=np.int64)


def _global_counts(groups, scores, amount) -> dict[int, int]:
    """How many classes each group loses under one ranking of scores normalized by the group's mean."""
    pool, capacity = [], {}
    for group in groups:
        index = {c: i for i, c in enumerate(group.classes.tolist())}
        removable = group.removable.tolist()
        values = np.array([scores[group.index][index[c]] for c in removable])
        scale = np.abs(values).mean() if len(values) else 1.0
        normalized = values / (scale if scale > 0 else 1.0)
        pool += [(float(v), group.index, i) for i, v in enumerate(normalized)]
        capacity[group.index] = min(len(removable), len(group.classes) - 1)
    total = int(math.floor(amount * sum(len(g.classes) for g in groups)))
    counts = {g.index: 0 for g in groups}
    for _, group_index, _ in sorted(pool):
        if total == 0:
            break
        if counts[group_index] < capacity[group_index]:
            counts[group_index] += 1
            total -= 1
    return counts


def prune(model: keras.Model, amount: float, criterion: str = "l2", scope: str = "local", x=None, *,
          seed: int = 0, exact: bool = True, check_samples: int = 64, batch_size: int = 256) -> PruneResult:
    """Remove a fraction ``amount`` of the channels of every dependency group of ``model`` (see module docstring).

    Args:
        amount: in (0, 1). ``scope="local"``: ``floor(amount * channels)`` per group; ``"global"``: that share of
            all prunable channels, chosen by one ranking of scores divided by their group's mean score.
        criterion: ``"l1"``, ``"l2"``, ``"bn_scale"``, ``"activation"``, ``"apoz"`` or ``"random"``
            (:mod:`masklab.surgery.criteria`).
        x: training inputs: needed by the activation criteria and by ``exact=False``; its first
            ``check_samples`` also measure ``max_abs_difference``. Never the test split.
        seed: for ``"random"``.
        exact: ``False`` also prunes channels that reach LayerNormalization / GroupNormalization over the channel
            axis (their scale and offset are sliced); the result then differs from the masked original, by the
            ``max_abs_difference`` it reports.
    """
    _validate(amount, criterion, scope, x, seed, exact, check_samples, batch_size)
    if x is not None:
        x = model_inputs(model, x)
    start = time.perf_counter()
    graph = trace(model, exact=exact)
    groups = graph.groups()
    eligible, skipped = [], {}
    for group in groups:
        if len(group.removable) == 0:
            skipped[group.index] = "blocked: " + next(iter(group.blocked.values()))
        elif len(group.classes) < 2:
            skipped[group.index] = "one channel only"
        else:
            partition = block_partition(graph, group)
            if isinstance(partition, str):
                skipped[group.index] = "blocked: " + partition
            else:
                eligible.append((group, partition))
    scores, used = group_scores(graph, [g for g, _ in eligible], criterion, x=x, seed=seed, batch_size=batch_size)
    if scope == "local":
        counts = {g.index: int(math.floor(amount * len(g.classes))) for g, _ in eligible}
    else:
        counts = _global_counts([g for g, _ in eligible], scores, amount)
    chosen: dict[int, np.ndarray] = {}
    for group, partition in eligible:
        picked = _choose(group, scores[group.index], counts[group.index], partition)
        if len(picked) == 0:
            continue
        try:
            graph.check_removal(picked.tolist())
        except ValueError as error:
            skipped[group.index] = f"blocked: {error}"
            continue
        chosen[group.index] = picked
    all_chosen = np.concatenate(list(chosen.values())) if chosen else np.array([], dtype=np.int64)
    removed = graph.removed_atoms(all_chosen.tolist())
    pruned = rebuild(graph, removed)
    seconds = time.perf_counter() - start

    macs = (_layer_macs(model), _layer_macs(pruned))
    report = _report(model, pruned, graph, groups, chosen, skipped, used, macs)
    result = PruneResult(
        model=pruned, report=report, amount=float(amount), criterion=criterion, scope=scope, exact=exact,
        removed={rec.path: np.flatnonzero(removed[rec.produced]) for rec in graph.producers()
                 if removed[rec.produced].any()},
        params_before=int(model.count_params()), params_after=int(pruned.count_params()),
        macs_before=None if macs[0] is None else int(sum(macs[0].values())),
        macs_after=None if macs[1] is None else int(sum(macs[1].values())),
        seconds=seconds, approximate_layers=approximate_layers(graph, removed))
    if x is not None:
        check = [a[:check_samples] for a in x]
        result.max_abs_difference, result.max_abs_output = measure(graph, removed, pruned, check,
                                                                   batch_size=batch_size)
        if exact and differs(result.max_abs_difference, result.max_abs_output):
            raise RuntimeError(f"internal check failed: the pruned model differs from the masked original by "
                               f"{result.max_abs_difference:.3g} (outputs up to {result.max_abs_output:.3g}) on x, "
                               f"so it is not returned. Please report it with the model.")
    finish(graph, removed, pruned, check=x is None, exact=exact)
    return result


def _layer_macs(model) -> dict[str, int] | None:
    try:
        return layer_macs(model)
    except ValueError:  # sizes not fixed (e.g. Input((None, None, 3))): MACs unknown, pruning still works
        return None


def _report(model, pruned, graph, groups, chosen, skipped, used, macs) -> pd.DataFrame:
    """One row per group. Parameters and MACs are those of the layers the group touches (its producers, the
    per-channel layers it passes through, its consumers): a layer between two groups counts in both rows."""
    params = ({path: int(layer.count_params()) for path, layer in all_layers(model)},
              {path: int(layer.count_params()) for path, layer in all_layers(pruned)})
    rows = []
    for group in groups:
        touched = [rec.path for rec in graph.records.values()
                   if any(np.isin(graph.root[atoms], group.classes).any() for atoms in rec.all_slots().values())]
        names = group.names
        n_removed = len(chosen.get(group.index, []))
        status = "pruned" if n_removed else skipped.get(group.index, "unchanged (amount below one channel)")
        rows.append({
            "group": group.index, "producers": ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else ""),
            "n_producers": len(names), "channels_before": len(group.classes),
            "channels_after": len(group.classes) - n_removed, "criterion": used.get(group.index, ""),
            "status": status,
            "params_before": sum(params[0].get(p, 0) for p in touched),
            "params_after": sum(params[1].get(p, 0) for p in touched),
            "macs_before": None if macs[0] is None else sum(macs[0].get(p, 0) for p in touched),
            "macs_after": None if macs[1] is None else sum(macs[1].get(p, 0) for p in touched)})
    return pd.DataFrame(rows)

"""Multi-level pathway networks (P-NET, BINN, KPNN) in ``notebooks/30-sparse-connectivity``: genes -> pathways ->
parent pathways -> top-level pathways, one ``SparseDense`` per level (``layers.connectivity_hierarchy``).

SYNTHETIC data, as in ``experiments.sparse``: a random tree of pathways over overlapping gene sets; the label
depends on one pathway's activity, hence on one parent and one top-level pathway above it: the *causal path*.
Two questions, each over several seeds:

* Does knocking out one unit at a time, level by level, find the causal path? Compared with a shuffled hierarchy
  of the same sizes (same pathway sizes, same number of children per parent), trained the same way.
* How should the initial weights be scaled? ``SparseDense(fan_scaling=...)``: the full shape as ``Dense``
  (``"full"``, the default), each unit's real fan-in (``"connected"``), or the flat nnz vector as P-NET's
  ``SparseTF`` (``"nnz"``): activation scale at initialization, level by level, and test accuracy after training.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from masklab import ablation, models, paths, plots, records, surgery, training
from masklab.experiments.sparse import pathway_memberships, shuffled_memberships
from masklab.layers import Connectivity, connectivity_hierarchy

FAN_SCALINGS = ("full", "connected", "nnz")
KNOCKOUT_SCALING = "full"  # the default: knock-out and the shuffled control use it


@dataclass(frozen=True)
class HierarchyProblem:
    """``levels[k]`` connects level ``k``'s inputs to its units (level 0: genes -> pathways); ``causal_path[k]``
    is the index of the causal unit at level ``k``. ``x`` (samples, genes), ``y`` in {0, 1}."""

    levels: list[Connectivity]
    causal_path: list[int]
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]

    def summary(self) -> dict:
        return {"genes": self.levels[0].input_dim, "units_per_level": [c.units for c in self.levels],
                "connections_per_level": [c.nnz for c in self.levels],
                "causal_path": [c.unit_names[j] for c, j in zip(self.levels, self.causal_path)],
                "sizes": {"train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])},
                "positive_rate_train": float(self.train[1].mean())}


def tree_memberships(children: list[str], n_parents: int, prefix: str, rng: np.random.Generator) -> list:
    """Each child gets one parent; every parent gets at least one child (``n_parents <= len(children)``)."""
    if not 1 <= n_parents <= len(children):
        raise ValueError(f"each level must have between 1 and as many units as the level below ({len(children)}). "
                         f"Received: {n_parents} units")
    parent_of = rng.permutation(np.arange(len(children)) % n_parents)
    return [(child, f"{prefix}_{p:03d}") for child, p in zip(children, parent_of)]


def hierarchy_problem(*, n_genes: int, level_sizes, density: float, loading: float, label_noise: float,
                      n_train: int, n_val: int, n_test: int, seed: int) -> HierarchyProblem:
    """Gene sets as in ``sparse.pathway_memberships`` (level 0), then a random tree above them with
    ``level_sizes[1:]`` units per level. Each pathway has a latent activity ``f ~ N(0, 1)`` per sample; a gene's
    expression is its pathways' activities (times ``loading``, over sqrt(its number of pathways)) plus N(0, 1)
    noise; ``y = 1[f_causal + label_noise * N(0, 1) > 0]``. All randomness from ``seed``."""
    level_sizes = [int(s) for s in level_sizes]
    genes_to_pathways = pathway_memberships(n_genes, level_sizes[0], density, seed)
    rng = np.random.default_rng([seed, 1])
    memberships = [[(genes_to_pathways.input_names[i], genes_to_pathways.unit_names[j])
                    for i, j in np.argwhere(genes_to_pathways.matrix)]]
    names = [list(genes_to_pathways.unit_names)]
    for k, size in enumerate(level_sizes[1:], start=2):
        memberships.append(tree_memberships(names[-1], size, f"level{k}", rng))
        names.append([f"level{k}_{p:03d}" for p in range(size)])
    levels = connectivity_hierarchy(memberships, genes_to_pathways.input_names, levels=names)
    causal = int(rng.integers(level_sizes[0]))
    path = [causal]
    for connectivity in levels[1:]:
        path.append(int(np.flatnonzero(connectivity.matrix[path[-1]])[0]))

    membership = genes_to_pathways.matrix.astype(np.float32)
    loadings = (loading * membership / np.sqrt(np.maximum(membership.sum(axis=1, keepdims=True), 1.0))).T

    def sample(n: int, stream: int):
        sample_rng = np.random.default_rng([seed, 2, stream])
        activity = sample_rng.standard_normal((n, level_sizes[0])).astype(np.float32)
        x = activity @ loadings + sample_rng.standard_normal((n, n_genes)).astype(np.float32)
        y = (activity[:, causal] + label_noise * sample_rng.standard_normal(n) > 0).astype(np.int64)
        return x.astype(np.float32), y

    return HierarchyProblem(levels, path, sample(n_train, 0), sample(n_val, 1), sample(n_test, 2))


def shuffled_hierarchy(levels: list[Connectivity], seed: int) -> list[Connectivity]:
    """Control of the same sizes: level 0's pathways keep their sizes with genes drawn uniformly
    (``sparse.shuffled_memberships``); above, each level's parents keep their number of children, drawn at
    random from the level below. Names are kept, so unit ``j`` is the 'same' pathway with the wrong members."""
    rng = np.random.default_rng([seed, 3])
    shuffled = [shuffled_memberships(levels[0], seed)]
    for connectivity in levels[1:]:
        matrix = connectivity.matrix[rng.permutation(connectivity.input_dim)]
        shuffled.append(Connectivity(matrix, connectivity.input_names, connectivity.unit_names, "shuffled"))
    return shuffled


def initial_activation_scale(levels: list[Connectivity], x: np.ndarray, *, activation: str, fan_scaling: str,
                             seed: int) -> list[float]:
    """Mean over units of the std of each level's output on ``x``, freshly initialized from ``seed``."""
    keras.utils.set_random_seed(seed)
    model = models.sparse_hierarchy_mlp(levels, 2, activation=activation, fan_scaling=fan_scaling)
    outputs = keras.Model(model.inputs, [model.get_layer(f"level_{k}").output for k in range(1, len(levels) + 1)])
    return [float(np.asarray(h).std(axis=0).mean()) for h in outputs.predict(x, verbose=0, batch_size=1024)]


def level_knockout(model: keras.Model, problem: HierarchyProblem, levels: list[Connectivity]) -> pd.DataFrame:
    """Each unit of each level switched off alone (one batched pass per level), scored on the test split:
    ``loss_increase`` (mean cross-entropy with the unit off minus without: continuous, so units rarely tie) and
    ``accuracy_drop``. Columns: ``level`` (1-based), ``unit``, ``name``, ``causal``, ``loss_increase``,
    ``accuracy_drop``."""
    x, y = problem.test
    rows = []
    for k, connectivity in enumerate(levels, start=1):
        units = connectivity.units
        masks = np.vstack([np.ones((1, units), np.float32), 1.0 - np.eye(units, dtype=np.float32)])
        probabilities = ablation.predict_with_masks(model, f"level_{k}", x, masks)  # (masks, samples, classes)
        loss = -np.log(np.clip(np.take_along_axis(probabilities, y[None, :, None], axis=2)[..., 0], 1e-12,
                               None)).mean(axis=1)
        accuracy = (probabilities.argmax(-1) == y).mean(axis=1)
        rows.append(pd.DataFrame({"level": k, "unit": np.arange(units), "name": connectivity.unit_names,
                                  "causal": np.arange(units) == problem.causal_path[k - 1],
                                  "loss_increase": loss[1:] - loss[0], "accuracy_drop": accuracy[0] - accuracy[1:]}))
    return pd.concat(rows, ignore_index=True)


def knockout_summary(knockout: pd.DataFrame, levels: list[Connectivity]) -> pd.DataFrame:
    """One row per level: the causal unit's loss increase, the largest of any other unit, whether the causal
    unit is strictly first, its rank, the unit ranked first, and whether that unit is the parent (in
    ``levels``) of the one ranked first at the level below."""
    rows, below = [], None
    for k, part in knockout.groupby("level"):
        ranked = part.sort_values("loss_increase", ascending=False, kind="stable").reset_index(drop=True)
        causal = float(part.loc[part.causal, "loss_increase"].iloc[0])
        other = float(part.loc[~part.causal, "loss_increase"].max()) if (~part.causal).any() else float("-inf")
        top = int(ranked["unit"].iloc[0])
        rows.append({"level": int(k), "units": len(part), "causal_loss_increase": causal,
                     "largest_other_loss_increase": other, "causal_is_first": bool(causal > other),
                     "causal_rank": int(ranked.index[ranked["causal"]][0]) + 1, "top_unit": top,
                     "top_is_parent_of_top_below": True if below is None else bool(levels[k - 1].matrix[below, top])})
        below = top
    return pd.DataFrame(rows)


def run_hierarchy(*, n_genes: int, level_sizes, density: float, loading: float, label_noise: float, n_train: int,
                  n_val: int, n_test: int, activation: str, epochs: int, batch_size: int, learning_rate: float,
                  seeds) -> dict[str, pd.DataFrame]:
    """For each seed: one problem; the true hierarchy trained with each fan scaling, and the shuffled control
    (default fans); the initial activation scale per level and fan scaling; knock-out of the true hierarchy
    (default fans) and of the control. Returns the tables ``models``, ``knockout`` (every unit),
    ``path`` (``knockout_summary`` per seed and hierarchy) and ``init``."""
    model_rows, knockouts, summaries, init_rows = [], [], [], []
    for seed in seeds:
        problem = hierarchy_problem(n_genes=n_genes, level_sizes=level_sizes, density=density, loading=loading,
                                    label_noise=label_noise, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
        control = shuffled_hierarchy(problem.levels, seed)
        runs = [("true", problem.levels, scaling) for scaling in FAN_SCALINGS] + [("shuffled", control,
                                                                                  KNOCKOUT_SCALING)]
        for hierarchy, levels, scaling in runs:
            with surgery.new_models_traced():  # a new model per run: its functions are traced once each
                model_rows.append(_one_run(problem, hierarchy, levels, scaling, seed, activation=activation,
                                           epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                           init_rows=init_rows, knockouts=knockouts, summaries=summaries))
    return {"models": pd.DataFrame(model_rows), "knockout": pd.concat(knockouts, ignore_index=True),
            "path": pd.concat(summaries, ignore_index=True), "init": pd.DataFrame(init_rows)}


def _one_run(problem: HierarchyProblem, hierarchy: str, levels: list[Connectivity], scaling: str, seed: int, *,
             activation: str, epochs: int, batch_size: int, learning_rate: float, init_rows: list, knockouts: list,
             summaries: list) -> dict:
    """One model of ``run_hierarchy``: its initial output scale (true hierarchy), training, test score and, with
    the default fans, knock-out; appends to ``init_rows`` / ``knockouts`` / ``summaries`` and returns the model's
    row of the ``models`` table."""
    if hierarchy == "true":
        scales = initial_activation_scale(levels, problem.train[0], activation=activation, fan_scaling=scaling,
                                          seed=seed)
        init_rows += [{"seed": seed, "fan_scaling": scaling, "level": k, "output_std": s}
                      for k, s in enumerate(scales, start=1)]
    result = training.train(
        lambda: models.sparse_hierarchy_mlp(levels, 2, activation=activation, fan_scaling=scaling),
        problem.train, problem.val, epochs=epochs, batch_size=batch_size, seed=seed, learning_rate=learning_rate,
        verbose=0)
    test_accuracy = training.evaluate(result.model, *problem.test)["accuracy"]
    print(f"seed {seed}, {hierarchy} hierarchy, fan_scaling={scaling}: epoch {result.best_epoch} chosen, "
          f"test accuracy {test_accuracy:.3f}", flush=True)
    if scaling == KNOCKOUT_SCALING:
        knockout = level_knockout(result.model, problem, levels)
        knockouts.append(knockout.assign(seed=seed, hierarchy=hierarchy))
        summaries.append(knockout_summary(knockout, levels).assign(seed=seed, hierarchy=hierarchy))
    return {"seed": seed, "hierarchy": hierarchy, "fan_scaling": scaling, "best_epoch": result.best_epoch,
            "val_accuracy": result.best_value, "test_accuracy": test_accuracy}


def hierarchy_metrics(tables: dict[str, pd.DataFrame], params: dict) -> dict:
    """Per hierarchy: seeds whose knock-out finds the causal unit first at every level; accuracy per fan
    scaling; initial output scale per level; the verdict with its rule."""
    path = tables["path"]
    per_seed = path.groupby(["hierarchy", "seed"]).agg(recovered=("causal_is_first", "all"),
                                                       consistent=("top_is_parent_of_top_below", "all"))
    recovered = per_seed["recovered"].groupby("hierarchy").sum()
    seeds = int(path["seed"].nunique())
    accuracy = tables["models"].groupby(["hierarchy", "fan_scaling"])["test_accuracy"].agg(["mean", "min", "max"])
    init = tables["init"].groupby(["fan_scaling", "level"])["output_std"].mean()
    return {
        "seeds": seeds,
        "seeds_path_recovered": {h: int(n) for h, n in recovered.items()},
        "seeds_top_units_form_a_path": {h: int(n) for h, n in per_seed["consistent"].groupby("hierarchy").sum().items()},
        "causal_rank_by_level": {h: {f"seed {s}": g["causal_rank"].tolist() for s, g in part.groupby("seed")}
                                 for h, part in path.groupby("hierarchy")},
        "test_accuracy": {f"{h}, fan_scaling={f}": {k: float(v) for k, v in row.items()}
                          for (h, f), row in accuracy.iterrows()},
        "initial_output_std": {f: [float(v) for v in init[f].values] for f in FAN_SCALINGS},
        "verdicts": {"knockout_recovers_the_causal_path": {
            "rule": "true hierarchy: at every level the causal unit's knock-out raises the test loss strictly the "
                    "most, for every seed; shuffled control of the same sizes: for no seed",
            "holds": bool(recovered.get("true", 0) == seeds and recovered.get("shuffled", 0) == 0)}},
        "params": params,
    }


def hierarchy_headline_metrics(metrics: dict) -> dict:
    """``metrics.json`` of the hierarchy experiment."""
    accuracy = metrics["test_accuracy"]
    return {"seeds": metrics["seeds"],
            "seeds_path_recovered_true": metrics["seeds_path_recovered"].get("true", 0),
            "seeds_path_recovered_shuffled": metrics["seeds_path_recovered"].get("shuffled", 0),
            **{f"test_accuracy_{f}": accuracy[f"true, fan_scaling={f}"]["mean"] for f in FAN_SCALINGS},
            "test_accuracy_shuffled": accuracy[f"shuffled, fan_scaling={KNOCKOUT_SCALING}"]["mean"]}


def save_hierarchy(tables: dict[str, pd.DataFrame], metrics: dict, results_dir=None) -> dict:
    out = paths.stage_results_dir("sparse_connectivity", "hierarchy", results_dir)
    written = {"metrics": records.write_metrics(hierarchy_headline_metrics(metrics), out / "metrics.json"),
               "results": records.write_json(metrics, out / "results.json"),
               **{name: records.write_csv(table, out / f"{name}.csv") for name, table in tables.items()},
               "knockout_figure": out / "hierarchy_knockout.png", "init_figure": out / "fan_scaling.png"}
    sizes = metrics["params"]["level_sizes"]
    plots.hierarchy_knockout(tables["path"], written["knockout_figure"],
                             title=f"{metrics['params']['n_genes']} genes -> {' -> '.join(map(str, sizes))} "
                                   f"(synthetic): one unit off at a time, {metrics['seeds']} seeds")
    plots.fan_scaling(tables["init"], tables["models"], written["init_figure"],
                      title="SparseDense initial weights: real fan-in vs full shape vs P-NET's flat nnz vector")
    return written

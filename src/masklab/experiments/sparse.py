"""Steps of ``notebooks/30-sparse-connectivity.ipynb`` (seed 003's 9 180 -> 230 pathway problem) and
``notebooks/31-sparse-receptive-fields.ipynb`` (784 -> 600 local receptive fields on an image dataset).

The pathway problem is synthetic and says so: genes, pathways, co-expression and labels are generated from
``seed`` so that the label depends on a few *known* pathways. That is what lets the figure check that the network
learns through the allowed connections: switching off a causal pathway's unit should hurt, the others should not,
and genes in no pathway get an input gradient of exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from masklab import ablation, data, models, paths, plots, records, training
from masklab.gradients import input_gradients
from masklab.layers import Connectivity, SparseDense, connectivity_from_pairs, local_receptive_fields


# --- the seed-sized pathway problem ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PathwayProblem:
    """Synthetic gene-expression task with co-expressed pathways; ``x`` (samples, genes), ``y`` in {0, 1}.

    Each pathway ``p`` has a latent activity ``f_p ~ N(0, 1)`` per sample; a gene's expression is the sum of the
    activities of the pathways it belongs to (times ``loading``, divided by sqrt(its number of pathways)) plus
    N(0, 1) noise. The label is ``1[sum_c sign_c * f_c + noise > 0]`` over a few causal pathways ``c``.
    Train, val and test are drawn independently from the same distribution."""

    connectivity: Connectivity  # the true gene -> pathway membership, with names
    causal_units: np.ndarray     # indices of the pathways the label depends on
    signs: np.ndarray
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]

    def summary(self) -> dict:
        genes_per_pathway = self.connectivity.matrix.sum(axis=0)
        return {"genes": self.connectivity.input_dim, "pathways": self.connectivity.units,
                "connections": self.connectivity.nnz, "density": self.connectivity.density,
                "genes_per_pathway": {"min": int(genes_per_pathway.min()), "median": float(np.median(
                    genes_per_pathway)), "max": int(genes_per_pathway.max())},
                "genes_in_no_pathway": int((~self.connectivity.matrix.any(axis=1)).sum()),
                "causal_pathways": [self.connectivity.unit_names[c] for c in self.causal_units],
                "sizes": {"train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])},
                "positive_rate_train": float(self.train[1].mean())}


def pathway_memberships(n_genes: int, n_pathways: int, density: float, seed: int) -> Connectivity:
    """Overlapping gene sets: pathway sizes log-normal around ``density * n_genes``; genes drawn with
    heavy-tailed popularity, so some genes sit in many pathways (as hub genes do). Names ``gene_00000``, ..."""
    if not 0 < density < 0.5:
        raise ValueError(f"density must be in (0, 0.5). Received: density={density}")
    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.7, size=n_genes)
    popularity /= popularity.sum()
    sizes = np.clip(rng.lognormal(np.log(density * n_genes), 0.5, n_pathways).round().astype(int), 3,
                    n_genes // 4)
    genes = [f"gene_{i:05d}" for i in range(n_genes)]
    pathways = [f"pathway_{j:03d}" for j in range(n_pathways)]
    pairs = [(genes[g], pathways[j]) for j, size in enumerate(sizes)
             for g in rng.choice(n_genes, size, replace=False, p=popularity)]
    return connectivity_from_pairs(pairs, genes, pathways)


def pathway_problem(*, n_genes: int = 9180, n_pathways: int = 230, density: float = 0.02, n_causal: int = 4,
                    loading: float = 0.5, label_noise: float = 0.5, n_train: int = 3000, n_val: int = 500,
                    n_test: int = 1000, seed: int = 0) -> PathwayProblem:
    """Generate the memberships and three independent samples (see ``PathwayProblem``); ``label_noise`` is the
    std of the label noise relative to the signal's. All randomness from ``seed``."""
    connectivity = pathway_memberships(n_genes, n_pathways, density, seed)
    rng = np.random.default_rng(seed + 1)
    causal = np.sort(rng.choice(n_pathways, n_causal, replace=False))
    signs = rng.choice([-1.0, 1.0], n_causal)
    membership = connectivity.matrix.astype(np.float32)
    memberships_per_gene = np.maximum(membership.sum(axis=1, keepdims=True), 1.0)
    loadings = (loading * membership / np.sqrt(memberships_per_gene)).T  # (pathways, genes)

    def sample(n: int, stream: int):
        sample_rng = np.random.default_rng([seed, stream])
        activity = sample_rng.standard_normal((n, n_pathways)).astype(np.float32)
        x = activity @ loadings + sample_rng.standard_normal((n, n_genes)).astype(np.float32)
        signal = activity[:, causal] @ signs
        y = (signal + label_noise * np.sqrt(n_causal) * sample_rng.standard_normal(n) > 0).astype(np.int64)
        return x.astype(np.float32), y

    return PathwayProblem(connectivity, causal, signs, sample(n_train, 0), sample(n_val, 1), sample(n_test, 2))


def shuffled_memberships(connectivity: Connectivity, seed: int) -> Connectivity:
    """Same pathway sizes (so the same density and parameter count), genes drawn uniformly: the wrong wiring."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros_like(connectivity.matrix)
    for j, size in enumerate(connectivity.matrix.sum(axis=0)):
        matrix[rng.choice(connectivity.input_dim, size, replace=False), j] = True
    return Connectivity(matrix, connectivity.input_names, connectivity.unit_names, "shuffled")


def off_mask_nonzeros(model: keras.Model) -> int:
    """Non-zero effective weights outside the connectivity, summed over the model's SparseDense layers."""
    return int(sum(np.count_nonzero(np.asarray(layer.effective_kernel())[~layer.connectivity.matrix])
                   for layer in model.layers if isinstance(layer, SparseDense)))


def trainable_parameters(model: keras.Model) -> int:
    """Weights that can change in training: a dense-implementation SparseDense counts only its connected
    kernel entries (the others are variables too, but pinned at 0)."""
    pinned = sum(layer.connectivity.matrix.size - layer.connectivity.nnz for layer in model.layers
                 if isinstance(layer, SparseDense) and layer.implementation == "dense")
    return int(sum(np.prod(w.shape) for w in model.trainable_weights) - pinned)


def _fit(build, train, val, *, epochs, batch_size, learning_rate, seed, name: str = "") -> training.TrainResult:
    result = training.train(build, train, val, epochs=epochs, batch_size=batch_size, seed=seed,
                            learning_rate=learning_rate, verbose=0)
    print(f"trained {name}: epoch {result.best_epoch} chosen, {result.monitor} {result.best_value:.4f}", flush=True)
    return result


def train_pathway_models(problem: PathwayProblem, *, activation: str, l2: float, epochs: int, batch_size: int,
                         learning_rate: float, seed: int, fan_scaling: str = "full") -> dict[str, training.TrainResult]:
    """The same 2-class head on three hidden layers of 230 units: SparseDense with the true memberships,
    SparseDense with shuffled memberships of the same sizes, and a plain Dense layer (all 9180 x 230 weights).
    All three get the same L2 penalty ``l2`` on the hidden kernel; ``fan_scaling`` is the SparseDense models'
    (``SparseDense``: how a variance-scaling initializer sees the fans)."""
    n_classes = 2
    hidden = dict(activation=activation, kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)
    sparse_init = dict(hidden, fan_scaling=fan_scaling)
    builders = {
        "true pathways": lambda: models.sparse_mlp(problem.connectivity, n_classes, **sparse_init),
        "shuffled pathways": lambda: models.sparse_mlp(shuffled_memberships(problem.connectivity, seed + 2),
                                                       n_classes, **sparse_init),
        "dense": lambda: models.mlp(problem.connectivity.input_dim, problem.connectivity.units, n_classes,
                                    **hidden),
    }
    return {name: _fit(build, problem.train, problem.val, epochs=epochs, batch_size=batch_size,
                       learning_rate=learning_rate, seed=seed, name=name) for name, build in builders.items()}


def pathway_model_table(results: dict[str, training.TrainResult], problem: PathwayProblem) -> pd.DataFrame:
    """One row per model: parameters, the epoch chosen on val, val and test accuracy, off-mask weights."""
    rows = []
    for name, result in results.items():
        best = result.history.loc[result.history["is_best"]].iloc[0]
        rows.append({"model": name, "trainable_parameters": trainable_parameters(result.model),
                     "best_epoch": result.best_epoch, "val_accuracy": float(best["val_accuracy"]),
                     "test_accuracy": training.evaluate(result.model, *problem.test)["accuracy"],
                     "off_mask_nonzero_weights": off_mask_nonzeros(result.model)})
    return pd.DataFrame(rows)


def unit_knockout(model: keras.Model, problem: PathwayProblem) -> pd.DataFrame:
    """Test accuracy with each hidden (pathway) unit switched off alone, one mask per unit in one batched pass.
    Columns: ``unit``, ``pathway``, ``causal``, ``accuracy``, ``accuracy_drop``."""
    x, y = problem.test
    units = problem.connectivity.units
    masks = np.vstack([np.ones((1, units), np.float32), 1.0 - np.eye(units, dtype=np.float32)])
    accuracy = (ablation.predict_with_masks(model, "hidden_1", x, masks).argmax(-1) == y).mean(axis=1)
    return pd.DataFrame({"unit": np.arange(units), "pathway": problem.connectivity.unit_names,
                         "causal": np.isin(np.arange(units), problem.causal_units),
                         "accuracy": accuracy[1:], "accuracy_drop": accuracy[0] - accuracy[1:]})


def input_saliency(results: dict[str, training.TrainResult], problem: PathwayProblem) -> pd.DataFrame:
    """Mean |d p(y=1) / d gene| over the test samples, per model and gene group: genes of a causal pathway,
    genes of other pathways only, genes in no pathway. For a SparseDense model the last group is exactly 0:
    there is no path from those genes to the output."""
    x = problem.test[0]
    matrix = problem.connectivity.matrix
    group = np.where(matrix[:, problem.causal_units].any(axis=1), "causal pathway genes",
                     np.where(matrix.any(axis=1), "other pathway genes", "genes in no pathway"))
    rows = []
    for name, result in results.items():
        saliency = np.abs(input_gradients(result.model, x, lambda probabilities: probabilities[:, 1])).mean(axis=0)
        rows += [{"model": name, "genes": g, "n_genes": int((group == g).sum()),
                  "mean_abs_gradient": float(saliency[group == g].mean())} for g in np.unique(group)]
    return pd.DataFrame(rows)


def pathway_metrics(table: pd.DataFrame, knockout: pd.DataFrame, saliency: pd.DataFrame, problem: PathwayProblem,
                    params: dict) -> dict:
    n_causal = len(problem.causal_units)
    top = knockout.nlargest(n_causal, "accuracy_drop", keep="first")
    return {
        "models": {row.model: {k: v for k, v in row._asdict().items() if k not in ("Index", "model")}
                   for row in table.itertuples()},
        "off_mask_nonzero_weights": int(table["off_mask_nonzero_weights"].sum()),
        "knockout": {"causal_pathways_among_top_drops": int(top["causal"].sum()), "n_causal": n_causal,
                     "mean_drop_causal": float(knockout.loc[knockout.causal, "accuracy_drop"].mean()),
                     "max_drop_non_causal": float(knockout.loc[~knockout.causal, "accuracy_drop"].max())},
        "saliency": {m: dict(zip(g["genes"], g["mean_abs_gradient"])) for m, g in saliency.groupby("model")},
        "problem": problem.summary(), "params": params,
    }


def pathway_headline_metrics(metrics: dict) -> dict:
    """``metrics.json``: test accuracy of each model and how many causal pathways the knock-out ranks first."""
    headline = {f"test_accuracy_{name.replace(' ', '_')}": model["test_accuracy"]
                for name, model in metrics["models"].items()}
    return {**headline, "causal_pathways_among_top_drops": metrics["knockout"]["causal_pathways_among_top_drops"],
            "n_causal": metrics["knockout"]["n_causal"], "off_mask_nonzero_weights": metrics["off_mask_nonzero_weights"]}


def save_pathways(table: pd.DataFrame, knockout: pd.DataFrame, saliency: pd.DataFrame, metrics: dict,
                  results_dir=None) -> dict:
    out = paths.stage_results_dir("sparse_connectivity", "pathways", results_dir)
    written = {"metrics": records.write_metrics(pathway_headline_metrics(metrics), out / "metrics.json"),
               "results": records.write_json(metrics, out / "results.json"),
               "models": records.write_csv(table, out / "models.csv"),
               "knockout": records.write_csv(knockout, out / "knockout.csv"),
               "saliency": records.write_csv(saliency, out / "saliency.csv")}
    written["figure"] = out / "pathways.png"
    plots.pathway_task(table, knockout, saliency, written["figure"],
                           title=f"{metrics['problem']['genes']} genes -> {metrics['problem']['pathways']} "
                                 f"pathways ({metrics['problem']['density']:.1%} connected), synthetic labels")
    return written


# --- the image variant -----------------------------------------------------------------------------------------
def receptive_field_sweep(splits: data.Splits, *, patches, hidden_units: int, epochs: int, batch_size: int,
                          learning_rate: float, seed: int) -> tuple[pd.DataFrame, dict[str, keras.Model]]:
    """``784 -> hidden_units`` with each unit seeing one k x k patch, for each k in ``patches``; a control with
    random connections at the same density; and the plain dense layer. Epochs chosen on val, scored on test."""
    height, width = splits.train.x.shape[1:3]
    channels = 1 if splits.train.x.ndim == 3 else splits.train.x.shape[3]
    train = (data.to_inputs(splits.train.x), splits.train.y)
    val = (data.to_inputs(splits.val.x), splits.val.y)
    test = (data.to_inputs(splits.test.x), splits.test.y)
    configs = {"dense": ("dense", None, lambda: models.mlp(train[0].shape[1], hidden_units, splits.num_classes))}
    for k in patches:
        local = local_receptive_fields(height, width, hidden_units, k, seed, channels)
        random = Connectivity(np.random.default_rng([seed, k]).permuted(local.matrix, axis=0), source="random")
        for kind, connectivity in (("local patches", local), ("random, same density", random)):
            configs[f"{kind} k={k}"] = (kind, k, lambda c=connectivity: models.sparse_mlp(c, splits.num_classes))
    rows, trained = [], {}
    for name, (kind, k, build) in configs.items():
        result = _fit(build, train, val, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      seed=seed, name=name)
        hidden = result.model.get_layer("hidden_1")
        density = hidden.connectivity.density if isinstance(hidden, SparseDense) else 1.0
        rows.append({"model": name, "connectivity": kind, "patch": k, "density": density,
                     "trainable_parameters": trainable_parameters(result.model), "best_epoch": result.best_epoch,
                     "val_accuracy": result.best_value,
                     "test_accuracy": training.evaluate(result.model, *test)["accuracy"],
                     "off_mask_nonzero_weights": off_mask_nonzeros(result.model)})
        trained[name] = result.model
    return pd.DataFrame(rows), trained


def receptive_field_metrics(table: pd.DataFrame, splits: data.Splits, params: dict) -> dict:
    return {
        "models": {row.model: {k: v for k, v in row._asdict().items() if k not in ("Index", "model")}
                   for row in table.itertuples()},
        "off_mask_nonzero_weights": int(table["off_mask_nonzero_weights"].sum()),
        "params": params, "data": splits.summary(),
    }


def receptive_field_headline_metrics(metrics: dict) -> dict:
    """``metrics.json``: dense test accuracy, and local patches vs random wiring at the smallest and the largest
    patch."""
    models_ = metrics["models"]
    patches = sorted({int(m["patch"]) for m in models_.values() if m["connectivity"] != "dense"})
    headline = {"test_accuracy_dense": models_["dense"]["test_accuracy"],
                "off_mask_nonzero_weights": metrics["off_mask_nonzero_weights"]}
    for k in (patches[0], patches[-1]) if patches else ():
        for kind, short in (("local patches", "local"), ("random, same density", "random")):
            headline[f"test_accuracy_{short}_k{k}"] = models_[f"{kind} k={k}"]["test_accuracy"]
    return headline


def save_receptive_fields(table: pd.DataFrame, models_by_name: dict, metrics: dict, splits: data.Splits,
                          results_dir=None) -> dict:
    """Write metrics.json, accuracy_vs_density.csv/.png and receptive_fields.png (the trained kernels of a few
    units of the middle patch size, zeros outside their patch)."""
    dataset = splits.dataset
    out = paths.stage_results_dir("sparse_connectivity", dataset, results_dir)
    written = {"metrics": records.write_metrics(receptive_field_headline_metrics(metrics), out / "metrics.json"),
               "results": records.write_json(metrics, out / "results.json"),
               "sweep": records.write_csv(table, out / "accuracy_vs_density.csv"),
               "plot_data": records.write_csv(plots.series_table(table, x="density", series="connectivity",
                                                                 y="test_accuracy"),
                                              out / "plot_data" / "accuracy_vs_density.csv"),
               "figure": out / "accuracy_vs_density.png", "fields": out / "receptive_fields.png"}
    plots.accuracy_vs_density(table, written["figure"],
                              title=f"784 -> {metrics['params']['hidden_units']} hidden units on {dataset}: "
                                    f"local k x k receptive fields vs random wiring")
    local = [name for name in models_by_name if name.startswith("local")]
    if local:
        example = models_by_name[local[len(local) // 2]].get_layer("hidden_1")
        plots.receptive_fields(np.asarray(example.effective_kernel()), splits.train.x.shape[1:], written["fields"],
                               title=f"{local[len(local) // 2]}: trained kernels of the first units ({dataset})")
    else:
        written.pop("fields")
    return written

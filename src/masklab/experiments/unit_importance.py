"""Steps of ``notebooks/21-unit-importance.ipynb``: two published findings about single units, checked here.

* Morcos et al. 2018, "On the importance of single directions for generalization": networks trained on partly
  randomized labels rely more on single directions (their cumulative random-ablation curves, over both hidden
  layers of a 2-hidden-layer MLP, measured on the training set, fall faster); and class selectivity is a poor
  predictor of a unit's importance.
* Zhou et al. 2018, "Revisiting the importance of individual units in CNNs via ablation": ablating one unit
  barely moves overall accuracy but can hurt single classes a lot, and selectivity predicts those per-class drops.
  Plus Bau et al.'s experiment: ablate a class's most important units, that class suffers, the others do not.

Data discipline: networks train on ``train``; the CNN picks its epoch on ``val``; units are chosen for the
class-targeted ablation on ``val``; ``test`` only measures. The memorization experiment measures on the training
set with the labels each network was trained on, as Morcos et al. do.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from scipy import stats

from masklab import ablation, data, models, paths, plots, records, training
from masklab.experiments.surgery import images, train_cnn


class StopAtTrainingAccuracy(keras.callbacks.Callback):
    """Stop once the training accuracy that ``fit`` logs (its running mean over the epoch) reaches ``target``:
    the networks are compared at equal memorization."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get("accuracy", 0.0) >= self.target:
            self.model.stop_training = True


def randomize_labels(y: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """A copy of ``y`` where ``round(fraction * N)`` samples, drawn with ``seed``, get a uniformly random class
    (Zhang et al. 2017's corruption; some keep their class by chance)."""
    rng = np.random.default_rng(seed)
    y = np.array(y, copy=True)
    chosen = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
    y[chosen] = rng.integers(0, num_classes, size=len(chosen))
    return y


def train_memorizing_mlp(splits: data.Splits, fraction: float, seed: int, *, hidden_units: int, max_epochs: int,
                         target_accuracy: float, batch_size: int, learning_rate: float):
    """A 784-H-H-10 MLP trained on the training split with ``fraction`` of its labels randomized, until its
    training accuracy reaches ``target_accuracy`` (at most ``max_epochs``); the last epoch is kept. Returns
    ``(model, training labels used, info)``."""
    y = randomize_labels(splits.train.y, fraction, splits.num_classes, seed)
    x = data.to_inputs(splits.train.x)
    result = training.train(lambda: models.mlp(x.shape[1], (hidden_units, hidden_units), splits.num_classes),
                            (x, y), (data.to_inputs(splits.val.x), splits.val.y), epochs=max_epochs,
                            batch_size=batch_size, learning_rate=learning_rate, seed=seed, restore_best=False,
                            callbacks=(StopAtTrainingAccuracy(target_accuracy),), verbose=0)
    last = result.history.iloc[-1]
    info = dict(randomized=fraction, seed=seed, epochs=int(last["epoch"]),
                train_accuracy_logged=float(last["accuracy"]),  # fit's running mean over the last epoch
                train_accuracy=training.evaluate(result.model, x, y)["accuracy"],  # after training, own labels
                test_accuracy=training.evaluate(result.model, data.to_inputs(splits.test.x),
                                                splits.test.y)["accuracy"])
    return result.model, y, info


def memorization_experiment(splits: data.Splits, *, randomized, seeds, hidden_units: int, max_epochs: int,
                            target_accuracy: float, batch_size: int, learning_rate: float, fractions, repeats: int):
    """Morcos et al.: for every label-randomization level and seed, the cumulative random-ablation curve over
    both hidden layers on the training set (with the network's own training labels), and for every network the
    units' class selectivity and single-unit importance (accuracy drop), both on the training set.

    Returns ``(curves, units, networks)``: tidy tables."""
    curves, units, networks = [], [], []
    layers = ["hidden_1", "hidden_2"]
    for fraction in randomized:
        for seed in seeds:
            model, y_train, info = train_memorizing_mlp(
                splits, fraction, seed, hidden_units=hidden_units, max_epochs=max_epochs,
                target_accuracy=target_accuracy, batch_size=batch_size, learning_rate=learning_rate)
            x_train = data.to_inputs(splits.train.x)
            print(f"MLP, {fraction:.0%} of the labels randomized, seed {seed}: {info['epochs']} epochs, training "
                  f"accuracy {info['train_accuracy']:.4f}", flush=True)
            curve = ablation.ablation_curve(model, layers, x_train, y_train, fractions, strategies=["random"],
                                            repeats=repeats, seed=seed)
            curves.append(curve.assign(randomized=fraction, seed=seed))
            info["ablation_area"] = float(curve.groupby("fraction")["accuracy"].mean().mean())
            networks.append(info)
            for layer in layers:
                table = ablation.single_unit_ablation(model, layer, x_train, y_train)
                units.append(pd.DataFrame({
                    "randomized": fraction, "seed": seed, "layer": layer, "unit": table["unit"],
                    "selectivity": ablation.class_selectivity(model, layer, x_train, y_train),
                    "accuracy_drop": table["accuracy_drop"]}))
    return pd.concat(curves, ignore_index=True), pd.concat(units, ignore_index=True), pd.DataFrame(networks)


def unit_effects(model: keras.Model, layer: str, split: data.Split) -> pd.DataFrame:
    """Per unit of ``layer`` on ``split``: selectivity, preferred class (highest class mean), overall accuracy
    drop when ablated alone, the largest single-class drop and that class, and ``drop_class_<c>`` columns."""
    x = images(split)
    table = ablation.single_unit_ablation(model, layer, x, split.y)
    means = ablation.class_means(model, layer, x, split.y)
    present = np.unique(split.y)
    drops = table[[f"drop_class_{c}" for c in present]].to_numpy()
    table.insert(1, "layer", layer)
    table.insert(2, "selectivity", ablation.class_selectivity(model, layer, x, split.y))
    table.insert(3, "preferred_class", present[means.argmax(axis=0)])
    table.insert(5, "max_class_drop", drops.max(axis=1))
    table.insert(6, "most_hurt_class", present[drops.argmax(axis=1)])
    return table


def class_probability_drops(model: keras.Model, layer: str, split: data.Split, batch_masks: int = 64) -> np.ndarray:
    """``(units, classes)``: how much ablating each unit alone lowers the model's mean output for the true class
    over the inputs of each class. Continuous, unlike accuracy on a few images per class (where most units tie
    at 0), so it can rank units on a small split."""
    x, y = images(split), split.y
    units = ablation.core.targets_of(model, layer)[0].units
    classes = int(model.outputs[0].shape[-1])
    onehot = np.eye(classes)[y]  # (N, classes)
    support = onehot.sum(axis=0)

    def true_class_means(masks):
        outputs = ablation.predict_with_masks(model, layer, x, masks)  # (k, N, classes)
        true_output = np.take_along_axis(outputs, y[None, :, None], axis=2)[..., 0]  # (k, N)
        return (true_output @ onehot) / np.maximum(support, 1)  # (k, classes)

    intact = true_class_means(np.ones((1, units), np.float32))[0]
    drops = np.concatenate([intact[None, :] - true_class_means(1.0 - np.eye(units, dtype=np.float32)[i:i + batch_masks])
                            for i in range(0, units, batch_masks)])
    return np.where(support > 0, drops, np.nan)


def class_targeted_ablation(model: keras.Model, layer: str, val: data.Split, test: data.Split,
                            top_fraction: float) -> pd.DataFrame:
    """Bau et al.: for every class c, ablate the ``round(top_fraction * units)`` units (at least 1) whose single
    ablation lowers the model's output for class c most on ``val`` (:func:`class_probability_drops`); on
    ``test``: class c's accuracy and the other classes' accuracy, before and after."""
    importance = class_probability_drops(model, layer, val)  # (units, classes)
    units = len(importance)
    count = max(1, int(round(top_fraction * units)))
    classes = sorted(np.unique(val.y).tolist())
    masks = np.ones((1 + len(classes), units), np.float32)
    for row, c in enumerate(classes, start=1):
        order = np.argsort(-importance[:, c], kind="stable")
        masks[row, order[:count]] = 0.0
    correct = ablation.predict_with_masks(model, layer, images(test), masks, reduce="per_class_accuracy",
                                          y=test.y)  # (1 + classes, classes)
    support = np.bincount(test.y, minlength=correct.shape[1])
    rows = []
    for row, c in enumerate(classes, start=1):
        rest = [k for k in range(correct.shape[1]) if k != c and support[k] > 0]
        weights = support[rest] / support[rest].sum()
        rows.append(dict(layer=layer, target_class=c, units_ablated=count,
                         target_before=float(correct[0, c]), target_after=float(correct[row, c]),
                         rest_before=float(correct[0, rest] @ weights), rest_after=float(correct[row, rest] @ weights)))
    table = pd.DataFrame(rows)
    table["target_drop"] = table.target_before - table.target_after
    table["rest_drop"] = table.rest_before - table.rest_after
    return table


def cnn_experiment(splits: data.Splits, *, seeds, layers, epochs: int, batch_size: int, learning_rate: float,
                   top_fraction: float):
    """Zhou et al. and Bau et al. on seed 004's CNN, one network per seed: per-unit effects on ``test`` and the
    class-targeted ablation (units chosen on ``val``). Returns ``(units, targeted, networks)``."""
    units, targeted, networks = [], [], []
    for seed in seeds:
        result = train_cnn(splits, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
        model = result.model
        print(f"CNN seed {seed}: epoch {result.best_epoch} chosen; single units of {layers} ablated", flush=True)
        networks.append(dict(seed=seed, best_epoch=result.best_epoch,
                             test_accuracy=training.evaluate(model, images(splits.test), splits.test.y)["accuracy"]))
        for layer in layers:
            units.append(unit_effects(model, layer, splits.test).assign(seed=seed))
            targeted.append(class_targeted_ablation(model, layer, splits.val, splits.test, top_fraction)
                            .assign(seed=seed))
    return pd.concat(units, ignore_index=True), pd.concat(targeted, ignore_index=True), pd.DataFrame(networks)


# --- statistics and verdicts ------------------------------------------------------------------------------------
def mean_ci(values) -> dict:
    """Mean and 95 % t-interval over independent runs (seeds)."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return dict(mean=mean, ci95=[mean, mean], n=len(values))
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return dict(mean=mean, ci95=[mean - half, mean + half], n=len(values))


def spearman_by_seed(units: pd.DataFrame, x: str, y: str, by=("seed",)) -> pd.DataFrame:
    """Spearman's rho between two unit columns, one value per group (e.g. per seed and layer)."""
    rows = []
    for key, group in units.groupby(list(by)):
        rho = stats.spearmanr(group[x], group[y]).statistic if group[x].nunique() > 1 and group[y].nunique() > 1 \
            else np.nan
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), rho=float(rho)))
    return pd.DataFrame(rows)


def summarize(networks_mlp: pd.DataFrame, units_mlp: pd.DataFrame, units_cnn: pd.DataFrame,
              targeted: pd.DataFrame) -> dict:
    """The numbers behind each claim, with 95 % intervals over seeds, and a plain verdict from a stated rule."""
    by_level = {f"{r:g}": mean_ci(g["ablation_area"]) for r, g in networks_mlp.groupby("randomized")}
    trend = stats.spearmanr(networks_mlp["randomized"], networks_mlp["ablation_area"])
    clean = units_mlp[units_mlp.randomized == 0]
    rho_mlp = spearman_by_seed(clean, "selectivity", "accuracy_drop", by=("seed", "layer"))
    rho_overall = spearman_by_seed(units_cnn, "selectivity", "accuracy_drop", by=("seed", "layer"))
    rho_class = spearman_by_seed(units_cnn, "selectivity", "max_class_drop", by=("seed", "layer"))
    match = units_cnn[units_cnn.max_class_drop > 0]
    per_seed = units_cnn.groupby("seed")
    overall_max = per_seed["accuracy_drop"].max()
    class_max = per_seed["max_class_drop"].max()
    robust = {
        "randomization_vs_ablation_area_spearman": float(trend.statistic),
        "randomization_vs_ablation_area_p": float(trend.pvalue),
        "ablation_area_by_randomized": by_level,
    }
    selectivity_importance = mean_ci(rho_mlp["rho"].dropna())
    zhou_single = {"largest_overall_drop": mean_ci(overall_max), "largest_class_drop": mean_ci(class_max),
                   "median_overall_drop": mean_ci(per_seed["accuracy_drop"].median()),
                   "median_largest_class_drop": mean_ci(per_seed["max_class_drop"].median())}
    zhou_predict = {"rho_selectivity_vs_largest_class_drop": mean_ci(rho_class["rho"].dropna()),
                    "rho_selectivity_vs_overall_drop": mean_ci(rho_overall["rho"].dropna()),
                    "most_hurt_is_preferred_class": float((match.most_hurt_class == match.preferred_class).mean())
                    if len(match) else float("nan"),
                    "chance": 1.0 / units_cnn["preferred_class"].nunique()}
    bau = {"target_drop": mean_ci(targeted.groupby("seed")["target_drop"].mean()),
           "rest_drop": mean_ci(targeted.groupby("seed")["rest_drop"].mean())}
    verdicts = {
        "morcos_memorizing_networks_rely_more_on_single_directions":
            _verdict(trend.statistic < 0 and trend.pvalue < 0.05,
                     "ablation-curve area falls with the share of randomized labels (Spearman rho < 0, p < 0.05)"),
        "morcos_selectivity_poor_predictor_of_importance":
            _verdict(abs(selectivity_importance["mean"]) < 0.3,
                     "|mean Spearman rho| between selectivity and accuracy drop < 0.3 (MLP, clean labels)"),
        "zhou_single_units_barely_move_overall_accuracy_but_hurt_classes":
            _verdict(zhou_single["largest_overall_drop"]["mean"] < 0.02 and
                     zhou_single["largest_class_drop"]["mean"] > 0.1,
                     "largest overall drop of any single unit < 2 points and largest single-class drop > 10 points"),
        "zhou_selectivity_predicts_class_drops":
            _verdict(zhou_predict["rho_selectivity_vs_largest_class_drop"]["ci95"][0] > 0,
                     "95 % interval of Spearman rho (selectivity vs largest class drop) above 0"),
        "bau_class_targeted_ablation_hurts_that_class":
            _verdict(bau["target_drop"]["ci95"][0] > bau["rest_drop"]["ci95"][1],
                     "the target class's drop interval lies above the other classes' drop interval"),
    }
    return {"morcos_randomized_labels": robust, "morcos_selectivity_vs_importance": selectivity_importance,
            "zhou_single_unit_effects": zhou_single, "zhou_selectivity_vs_drops": zhou_predict,
            "bau_class_targeted": bau, "verdicts": verdicts}


def _verdict(holds: bool, rule: str) -> dict:
    return {"holds_here": bool(holds), "rule": rule}


def headline_metrics(metrics: dict) -> dict:
    """``metrics.json``: one boolean per claim, true where it holds here (the rules and the numbers they rest
    on are in ``results.json: verdicts``)."""
    return {HEADLINE_NAMES[name]: verdict["holds_here"] for name, verdict in metrics["verdicts"].items()}


# results.json's verdict names -> the short column names of `dvc metrics show`
HEADLINE_NAMES = {
    "morcos_memorizing_networks_rely_more_on_single_directions": "morcos_memorizing",
    "morcos_selectivity_poor_predictor_of_importance": "morcos_selectivity",
    "zhou_single_units_barely_move_overall_accuracy_but_hurt_classes": "zhou_single_units",
    "zhou_selectivity_predicts_class_drops": "zhou_selectivity",
    "bau_class_targeted_ablation_hurts_that_class": "bau_targeted",
}


def save_unit_importance(curves: pd.DataFrame, units_mlp: pd.DataFrame, networks_mlp: pd.DataFrame,
                         units_cnn: pd.DataFrame, targeted: pd.DataFrame, networks_cnn: pd.DataFrame, summary: dict,
                         params: dict, splits: data.Splits, dataset: str, results_dir=None) -> dict:
    out = paths.stage_results_dir("unit_importance", dataset, results_dir)
    metrics = {**summary, "mlp_networks": networks_mlp.to_dict("records"),
               "cnn_networks": networks_cnn.to_dict("records"), "params": params, "data": splits.summary()}
    written = {
        "metrics": records.write_metrics(headline_metrics(metrics), out / "metrics.json"),
        "results": records.write_json(metrics, out / "results.json"),
        "curves": records.write_csv(curves, out / "ablation_by_randomization.csv"),
        "units_mlp": records.write_csv(units_mlp, out / "mlp_units.csv"),
        "units_cnn": records.write_csv(units_cnn, out / "cnn_units.csv"),
        "targeted": records.write_csv(targeted, out / "class_targeted.csv"),
        "plot_data": records.write_csv(
            plots.series_table(curves, x="fraction", series="randomized", y="accuracy",
                               names="{:.0%} of labels randomized".format),
            out / "plot_data" / "ablation_by_randomization.csv"),
    }
    figures = {"curves_figure": (plots.ablation_by_randomization, curves,
                                 f"Cumulative random ablation, both hidden layers, training set ({dataset})"),
               "selectivity_figure": (plots.selectivity_vs_importance, (units_mlp, units_cnn),
                                      f"Class selectivity vs importance ({dataset})"),
               "heatmap_figure": (plots.class_drop_heatmap, units_cnn[units_cnn.seed == units_cnn.seed.min()],
                                  f"Per-class accuracy drop when one unit is ablated (test split, {dataset})"),
               "targeted_figure": (plots.class_targeted_ablation, targeted,
                                   f"Ablating a class's most important units (chosen on val; test, {dataset})")}
    names = {"curves_figure": "ablation_by_randomization.png", "selectivity_figure": "selectivity_vs_importance.png",
             "heatmap_figure": "class_drop_heatmap.png", "targeted_figure": "class_targeted_ablation.png"}
    for key, (plot, table, title) in figures.items():
        written[key] = out / names[key]
        plot(table, written[key], title=title)
    return written

"""Steps of ``notebooks/40-neuron-surgery.ipynb``: seed 004's CNN, 100 of its 512 dense units physically removed,
checked against the masked model; accuracy vs units removed; conv filters; latency masked vs removed."""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from masklab import data, models, paths, plots, records, surgery, training


def images(split: data.Split) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> float32 (N, H, W, C) in [0, 1]."""
    x = data.to_inputs(split.x, flatten=False)
    return x[..., None] if x.ndim == 3 else x


def train_cnn(splits: data.Splits, *, epochs: int, batch_size: int, learning_rate: float,
              seed: int) -> training.TrainResult:
    x_train = images(splits.train)
    return training.train(lambda: models.seed_cnn(x_train.shape[1:], splits.num_classes), (x_train, splits.train.y),
                          (images(splits.val), splits.val.y), epochs=epochs, batch_size=batch_size, seed=seed,
                          learning_rate=learning_rate, verbose="epoch")


def choose_units(model: keras.Model, layer: str, n: int, how: str, seed: int) -> np.ndarray:
    """``n`` unit indices of ``layer``: ``"weight_norm"`` (smallest incoming L2 norm) or ``"random"``."""
    if how == "weight_norm":
        return surgery.units_by_weight_norm(model, layer, n)
    if how == "random":
        return np.sort(np.random.default_rng(seed).choice(surgery.unit_count(model.get_layer(layer)), n,
                                                          replace=False))
    raise ValueError(f"how must be 'weight_norm' or 'random'. Received: how={how!r}")


def shapes_before_after(original: keras.Model, pruned: keras.Model) -> pd.DataFrame:
    before = pd.DataFrame(surgery.parameter_table(original)).set_index("layer")
    after = pd.DataFrame(surgery.parameter_table(pruned)).set_index("layer")
    return before.join(after, lsuffix="_before", rsuffix="_after").drop(columns="type_after").reset_index()


def accuracy_vs_removed(model: keras.Model, splits: data.Splits, layer: str, counts, *, repeats: int,
                        seed: int) -> pd.DataFrame:
    """Test accuracy of pruned models: ``n`` units removed by smallest weight norm, or at random (``repeats``
    draws). Columns ``removed``, ``how``, ``repeat``, ``accuracy``."""
    x, y = images(splits.test), splits.test.y
    base = float((model.predict(x, verbose=0, batch_size=512).argmax(-1) == y).mean())
    rows = []
    for n in counts:
        if n == 0:
            rows += [{"removed": 0, "how": how, "repeat": 0, "accuracy": base} for how in ("weight_norm", "random")]
            continue
        draws = [("weight_norm", 0)] + [("random", r) for r in range(repeats)]
        for how, r in draws:
            pruned = surgery.remove_units(model, layer, choose_units(model, layer, n, how, seed + r))
            with surgery.new_models_traced():  # a new model per draw: its predict function is traced once
                accuracy = float((pruned.predict(x, verbose=0, batch_size=512).argmax(-1) == y).mean())
            rows.append({"removed": int(n), "how": how, "repeat": r, "accuracy": accuracy})
    return pd.DataFrame(rows)


def latency_ms(model: keras.Model, x: np.ndarray, repeats: int = 20) -> float:
    """Median wall-clock milliseconds of one compiled inference call on ``x``."""
    step = keras.Model(model.inputs, model.outputs)
    step.compile(jit_compile="auto")
    step.predict_on_batch(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def surgery_metrics(result: training.TrainResult, splits, checks: dict, curve: pd.DataFrame, params: dict) -> dict:
    """Deterministic numbers only (same bytes on a rerun); latency goes to its own file."""
    mean = curve.groupby(["how", "removed"])["accuracy"].mean()
    return {"test_accuracy": training.evaluate(result.model, images(splits.test), splits.test.y)["accuracy"],
            "best_epoch": result.best_epoch, "checks": checks,
            "accuracy_vs_removed": {h: {str(n): float(a) for n, a in mean[h].items()} for h in mean.index.levels[0]},
            "params": params, "data": splits.summary()}


def headline_metrics(metrics: dict) -> dict:
    """``metrics.json``: test accuracy, the largest surgery-vs-masking difference of the checks, the parameter
    counts before and after the example removal, and the test accuracy with the middle count of the sweep
    removed (``<how>_<count>_removed``)."""
    checks = metrics["checks"]
    headline = {"test_accuracy": metrics["test_accuracy"], "best_epoch": metrics["best_epoch"],
                "max_abs_diff": max(checks[k] for k in ("conv_filters", "index_list", "weight_norm")),
                "params_before": checks["parameters_before"], "params_after": checks["parameters_after"]}
    for how, curve in metrics["accuracy_vs_removed"].items():
        counts = sorted(curve, key=int)
        middle = counts[len(counts) // 2]
        headline[f"{how}_{middle}_removed"] = curve[middle]
    return headline


def save_surgery(shapes: pd.DataFrame, curve: pd.DataFrame, metrics: dict, latency: dict, dataset: str,
                 results_dir=None) -> dict:
    """metrics.json (deterministic), latency.json (wall-clock, varies run to run), shapes.csv, the curve."""
    out = paths.stage_results_dir("neuron_surgery", dataset, results_dir)
    written = {"metrics": records.write_metrics(headline_metrics(metrics), out / "metrics.json"),
               "results": records.write_json(metrics, out / "results.json"),
               "latency": records.write_json(latency, out / "latency.json"),
               "shapes": records.write_csv(shapes, out / "shapes.csv"),
               "curve": records.write_csv(curve, out / "accuracy_vs_removed.csv"),
               "plot_data": records.write_csv(plots.series_table(curve, x="removed", series="how", y="accuracy"),
                                              out / "plot_data" / "accuracy_vs_removed.csv"),
               "figure": out / "accuracy_vs_removed.png"}
    plots.accuracy_vs_removed(curve, written["figure"],
                              title=f"Seed 004's CNN on {dataset}: units of its 512-unit dense layer physically "
                                    f"removed (test split)")
    return written

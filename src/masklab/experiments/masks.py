"""Steps of ``notebooks/20-neuron-masks.ipynb``: switch hidden units of the stage-10 baseline off per input."""

from __future__ import annotations

import os

import keras
import numpy as np
import pandas as pd

from masklab import ablation, data, paths, plots, records
from masklab.layers import keep_mask


def load_baseline(dataset: str, models_dir: str | os.PathLike | None = None) -> keras.Model:
    """The model trained by stage ``baseline@<dataset>`` (``models/baseline/<dataset>.keras``)."""
    path = paths.model_path("baseline", dataset, models_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `dvc repro baseline@{dataset}` first.")
    return keras.models.load_model(path)


def example_masks(model: keras.Model, layer: str, image: np.ndarray, reference_x: np.ndarray,
                  seed: int) -> dict[str, np.ndarray]:
    """Named ``(units,)`` KEEP masks for one input: none, random halves, and per-input choices (this image's
    most / least active units), plus the units most active on average over the training data."""
    units = ablation.split_model(model, layer)[2]
    own = ablation.hidden_activations(model, layer, image[None])[0]
    on_average = ablation.hidden_activations(model, layer, reference_x).mean(axis=0)
    n10 = round(0.1 * units)
    rng = np.random.default_rng(seed)
    top_own = np.argsort(-own, kind="stable")
    return {
        "all units kept": np.ones(units, np.float32),
        "random 50% off": keep_mask(units, rng.permutation(units)[: units // 2]),
        f"train's {n10} most active off": keep_mask(units, np.argsort(-on_average, kind="stable")[:n10]),
        f"this image's {n10} most active off": keep_mask(units, top_own[:n10]),
        f"all but this image's {n10} most active off": keep_mask(units, top_own[n10:]),
    }


def example_predictions(model: keras.Model, layer: str, image: np.ndarray, masks: dict[str, np.ndarray],
                        class_names) -> pd.DataFrame:
    """Tidy class probabilities (``mask``, ``class``, ``probability``) of one input under each named mask."""
    probabilities = ablation.predict_with_masks(model, layer, image[None], np.stack(list(masks.values())))[:, 0]
    return pd.DataFrame([dict(mask=name, **{"class": class_names[c]}, probability=float(p[c]))
                         for name, p in zip(masks, probabilities) for c in range(len(class_names))])


def accuracy_drop(model: keras.Model, layer: str, splits: data.Splits, *, n_fractions: int, max_fraction: float,
                  strategies, repeats: int, seed: int) -> pd.DataFrame:
    """Test accuracy vs fraction of ``layer``'s units switched off; activation ranks come from ``train``."""
    fractions = np.round(np.linspace(0.0, max_fraction, n_fractions), 4)
    return ablation.ablation_curve(model, layer, data.to_inputs(splits.test.x), splits.test.y, fractions,
                                   strategies, repeats=repeats, seed=seed,
                                   reference_x=data.to_inputs(splits.train.x))


def numpy_mlp_forward(model: keras.Model, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The baseline 784-H-10 MLP by hand in NumPy (float64): softmax((relu(x W1 + b1) * keep) W2 + b2)."""
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in model.get_weights())
    z = (np.maximum(x @ w1 + b1, 0) * keep) @ w2 + b2
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def per_sample_mask_check(model: keras.Model, layer: str, splits: data.Splits, n: int, seed: int) -> dict:
    """``n`` test images, each with its own random KEEP mask, in one batch through ``with_mask_input``,
    compared with the NumPy forward pass; returns the max absolute probability difference."""
    x = data.to_inputs(splits.test.x[:n])
    units = ablation.split_model(model, layer)[2]
    keep = (np.random.default_rng(seed).random((len(x), units)) >= 0.5).astype(np.float32)
    masked_model = ablation.with_mask_input(model, layer)
    keras_probs = masked_model.predict([x, keep], verbose=0)
    numpy_probs = numpy_mlp_forward(model, x, keep)
    return {"n_images": len(x), "max_abs_diff": float(np.abs(keras_probs - numpy_probs).max()),
            "same_predictions": bool((keras_probs.argmax(1) == numpy_probs.argmax(1)).all())}


def mask_metrics(table: pd.DataFrame, check: dict, splits: data.Splits, params: dict) -> dict:
    """Mean test accuracy per strategy at each fraction, the per-sample check, the splits' fingerprints."""
    mean = table.groupby(["strategy", "fraction"])["accuracy"].mean()
    return {
        "test_accuracy_unmasked": float(table.loc[table.fraction == 0, "accuracy"].iloc[0]),
        "test_accuracy_by_strategy": {s: {f"{f:.4g}": float(a) for f, a in mean[s].items()}
                                      for s in mean.index.levels[0]},
        "per_sample_check": check,
        "params": params,
        "data": splits.summary(),
    }


def headline_metrics(metrics: dict) -> dict:
    """``metrics.json``: test accuracy unmasked (``test_accuracy``), with about half the units off by each
    strategy (``<strategy>_50pct``: the measured fraction nearest 0.5), and the per-sample check's largest
    difference from a hand-zeroed copy (``max_abs_diff``)."""
    headline = {"test_accuracy": metrics["test_accuracy_unmasked"],
                "max_abs_diff": metrics["per_sample_check"]["max_abs_diff"]}
    for strategy, curve in metrics["test_accuracy_by_strategy"].items():
        half = min(curve, key=lambda fraction: abs(float(fraction) - 0.5))
        headline[f"{strategy}_{round(100 * float(half))}pct"] = curve[half]
    return headline


def save_masks(table: pd.DataFrame, examples: pd.DataFrame, image: np.ndarray, metrics: dict, dataset: str,
               results_dir=None, *, true_label: int | None = None, class_names=None) -> dict:
    out = paths.stage_results_dir("neuron_masks", dataset, results_dir)
    written = {"metrics": records.write_metrics(headline_metrics(metrics), out / "metrics.json"),
               "results": records.write_json(metrics, out / "results.json"),
               "ablation": records.write_csv(table, out / "ablation.csv"),
               "examples": records.write_csv(examples, out / "mask_examples.csv"),
               "plot_data": records.write_csv(plots.series_table(table, x="fraction", series="strategy", y="accuracy"),
                                              out / "plot_data" / "accuracy_drop.csv")}
    plots.accuracy_drop(table, out / "accuracy_drop.png",
                        title=f"Hidden units switched off in the 784-600-10 MLP ({dataset}, test split)")
    plots.mask_examples(image, examples, out / "mask_examples.png", true_label=true_label, class_names=class_names,
                        title=f"One {dataset} test image: class probabilities with hidden units of the "
                              f"784-600-10 MLP switched off")
    written.update(accuracy_drop=out / "accuracy_drop.png", mask_examples=out / "mask_examples.png")
    return written

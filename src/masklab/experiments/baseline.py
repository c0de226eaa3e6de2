"""Steps of ``notebooks/10-baseline.ipynb``: the seeds' 784-600-10 MLP trained with the common loop."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from masklab import data, models, paths, plots, records, training


def train_baseline(splits: data.Splits, *, hidden_units: int = 600, epochs: int = 10, batch_size: int = 128,
                   learning_rate: float = 1e-3, seed: int = 0, verbose="auto",
                   live_dir: str | os.PathLike | None = None) -> training.TrainResult:
    """Train ``input -> hidden_units ReLU -> classes softmax`` with Adam; epoch chosen on ``val``. ``live_dir``:
    where DVCLive logs every epoch (the stage's ``epochs/`` folder, drawn by ``dvc plots show``)."""
    x_train = data.to_inputs(splits.train.x)
    build = lambda: models.mlp(x_train.shape[1], hidden_units, splits.num_classes, name="baseline_mlp")  # noqa: E731
    return training.train(
        build, (x_train, splits.train.y), (data.to_inputs(splits.val.x), splits.val.y),
        epochs=epochs, batch_size=batch_size, seed=seed, optimizer="adam", learning_rate=learning_rate,
        verbose=verbose, live_dir=live_dir,
    )


def score_on_test(result: training.TrainResult, splits: data.Splits) -> dict[str, float]:
    """Test loss and accuracy of the selected epoch's weights: the only time ``test`` is used."""
    return training.evaluate(result.model, data.to_inputs(splits.test.x), splits.test.y)


def baseline_metrics(result: training.TrainResult, splits: data.Splits, test_scores: dict, params: dict) -> dict:
    best = result.history.loc[result.history["is_best"]].iloc[0]
    return {
        "test_accuracy": test_scores["accuracy"],
        "test_loss": test_scores["loss"],
        "val_accuracy": float(best["val_accuracy"]),
        "train_accuracy": float(best["accuracy"]),
        "best_epoch": result.best_epoch,
        "selected_on": result.monitor,
        "params": params,
        "data": splits.summary(),
        "device": result.device,
        "versions": {"keras": keras.__version__, "backend": keras.config.backend()},
    }


def headline_metrics(metrics: dict) -> dict:
    """The numbers ``dvc metrics show`` lists for this stage (``metrics.json``)."""
    return {key: metrics[key] for key in ("test_accuracy", "test_loss", "val_accuracy", "train_accuracy",
                                          "best_epoch")}


def save_baseline(result: training.TrainResult, metrics: dict, dataset: str, *,
                  results_dir: str | os.PathLike | None = None,
                  models_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``metrics.json`` (headline), ``results.json`` (all of ``metrics``), ``history.csv``,
    ``learning_curve.png`` and the model ``.keras`` file."""
    out = paths.stage_results_dir("baseline", dataset, results_dir)
    written = {
        "metrics": records.write_metrics(headline_metrics(metrics), out / "metrics.json"),
        "results": records.write_json(metrics, out / "results.json"),
        "history": records.write_csv(result.history, out / "history.csv"),
        "model": paths.model_path("baseline", dataset, models_dir),
    }
    records.save_model(result.model, written["model"])
    plots.learning_curve(result.history, out / "learning_curve.png",
                         title=f"784-{metrics['params']['hidden_units']}-10 MLP on {dataset}: "
                               f"test accuracy {metrics['test_accuracy']:.4f}")
    written["learning_curve"] = out / "learning_curve.png"
    return written

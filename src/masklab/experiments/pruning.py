"""Steps of ``notebooks/41-pruning.ipynb``: a small residual CNN trained on the dataset, then pruned as a whole
(every dependency group, ``masklab.surgery.prune``) at several fractions by several criteria, its BatchNorm
statistics re-estimated, fine-tuned, and scored after each step: test accuracy vs multiply-accumulates, and
measured latency.

Data discipline: criteria that look at activations and the BatchNorm re-estimation see training images only;
fine-tuning picks its epoch on ``val``; ``test`` only scores.
"""

from __future__ import annotations

import keras
import pandas as pd

from masklab import data, models, paths, plots, records, surgery, training
from masklab.experiments.surgery import images, latency_ms


def train_model(splits: data.Splits, *, widths, epochs: int, batch_size: int, learning_rate: float,
                seed: int) -> training.TrainResult:
    """The residual CNN (``masklab.models.residual_cnn``) trained with Adam; epoch chosen on ``val``."""
    x_train = images(splits.train)
    return training.train(lambda: models.residual_cnn(x_train.shape[1:], splits.num_classes, widths=widths),
                          (x_train, splits.train.y), (images(splits.val), splits.val.y), epochs=epochs,
                          batch_size=batch_size, learning_rate=learning_rate, seed=seed, verbose="epoch")


def test_accuracy(model: keras.Model, splits: data.Splits) -> float:
    with surgery.new_models_traced():  # every pruned model is new: its predict function is traced once
        predictions = model.predict(images(splits.test), batch_size=512, verbose=0)
    return float((predictions.argmax(axis=-1) == splits.test.y).mean())


def fine_tune(model: keras.Model, splits: data.Splits, *, epochs: int, batch_size: int, learning_rate: float,
              seed: int) -> training.TrainResult:
    """Train ``model`` (a fresh compile: new optimizer state) ``epochs`` more epochs; epoch chosen on ``val``."""
    with surgery.new_models_traced():  # every pruned model is new: its train function is traced once
        return training.train(model, (images(splits.train), splits.train.y), (images(splits.val), splits.val.y),
                              epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                              verbose=0)


PHASES = ("pruned", "recalibrated", "fine-tuned")


def prune_sweep(model: keras.Model, splits: data.Splits, *, fractions, criteria, rank_samples: int,
                fine_tune_epochs: int, batch_size: int, learning_rate: float, seed: int) -> pd.DataFrame:
    """Every (criterion, fraction): prune, then re-estimate the BatchNorm statistics on the training images
    (:func:`masklab.training.recalibrate_batchnorm`, no weight changes), then fine-tune; score on test after each.

    One row per (criterion, fraction, phase), ``phase`` in ``pruned`` / ``recalibrated`` / ``fine-tuned``:
    ``test_accuracy``, ``macs``, ``params``, ``relative_difference`` (pruned vs the masked original on training
    images) and ``fine_tune_epoch``. Fraction 0 runs the same pipeline on an unpruned copy (the control).
    """
    x_train = images(splits.train)
    x_rank = x_train[:rank_samples]

    def three_phases(pruned, common):
        rows = [dict(common, phase="pruned", test_accuracy=test_accuracy(pruned, splits), fine_tune_epoch=0)]
        training.recalibrate_batchnorm(pruned, x_train, batch_size=batch_size)
        rows.append(dict(common, phase="recalibrated", test_accuracy=test_accuracy(pruned, splits),
                         fine_tune_epoch=0))
        tuned = fine_tune(pruned, splits, epochs=fine_tune_epochs, batch_size=batch_size,
                          learning_rate=learning_rate, seed=seed)
        rows.append(dict(common, phase="fine-tuned", test_accuracy=test_accuracy(tuned.model, splits),
                         fine_tune_epoch=tuned.best_epoch))
        return rows

    control = three_phases(_control_copy(model), dict(fraction=0.0, macs=surgery.count_macs(model),
                                                      params=int(model.count_params()), relative_difference=0.0))
    rows = []
    for criterion in criteria:
        for fraction in fractions:
            if fraction == 0:  # the unpruned control is the same for every criterion: computed once
                rows += [dict(row, criterion=criterion) for row in control]
                continue
            print(f"pruning {fraction:.0%} of every group's channels by {criterion}", flush=True)
            result = surgery.prune(model, fraction, criterion, x=x_rank, seed=seed)
            rows += three_phases(result.model, dict(criterion=criterion, fraction=float(fraction),
                                                    macs=result.macs_after, params=result.params_after,
                                                    relative_difference=result.relative_difference))
    return pd.DataFrame(rows)


def _control_copy(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def latency_sweep(model: keras.Model, splits: data.Splits, fractions, *, batch: int, repeats: int = 20) -> pd.DataFrame:
    """Median compiled inference time of one batch of training images for each fraction (local scope: the
    architecture, hence the time, is the same for every criterion). Wall-clock: varies from run to run."""
    x = images(splits.train)[:batch]
    rows = []
    for fraction in fractions:
        pruned = model if fraction == 0 else surgery.prune(model, fraction).model
        rows.append(dict(fraction=float(fraction), macs=surgery.count_macs(pruned), params=int(pruned.count_params()),
                         latency_ms=latency_ms(pruned, x, repeats=repeats)))
    return pd.DataFrame(rows)


def pruning_metrics(result: training.TrainResult, splits: data.Splits, table: pd.DataFrame,
                    example: surgery.PruneResult, params: dict) -> dict:
    """Deterministic numbers only (latency goes to its own file)."""
    accuracy = {f"{row.criterion}/{row.phase}/{row.fraction:g}": row.test_accuracy for row in table.itertuples()}
    pruned = table[table["fraction"] > 0]
    return {"test_accuracy": test_accuracy(result.model, splits), "best_epoch": result.best_epoch,
            "macs": surgery.count_macs(result.model), "parameters": int(result.model.count_params()),
            "max_relative_difference": float(pruned["relative_difference"].max()) if len(pruned) else 0.0,
            "example": example.summary(),
            "test_accuracy_by_criterion_phase_fraction": accuracy, "params": params, "data": splits.summary()}


def headline_metrics(metrics: dict) -> dict:
    """``metrics.json``: the trained model, the example prune (half the channels, l2) and the worst relative
    difference between pruned and masked models."""
    example = metrics["example"]
    return {"test_accuracy": metrics["test_accuracy"], "macs": metrics["macs"], "parameters": metrics["parameters"],
            "half_pruned_macs": example["macs_after"], "half_pruned_params": example["params_after"],
            "max_relative_difference": metrics["max_relative_difference"]}


def save_pruning(table: pd.DataFrame, latency: pd.DataFrame, example: surgery.PruneResult, metrics: dict,
                 dataset: str, results_dir=None) -> dict:
    """metrics.json, tradeoff.csv, report.csv (the per-group report of ``example``), accuracy_vs_macs.png: the
    same bytes on a rerun (committed); latency.csv and latency.png: wall-clock, different on every run (neither
    committed nor declared to DVC; the committed speed figures come from ``benchmarks/bench_pruning.py``)."""
    out = paths.stage_results_dir("pruning", dataset, results_dir)
    written = {"metrics": records.write_metrics(headline_metrics(metrics), out / "metrics.json"),
               "results": records.write_json(metrics, out / "results.json"),
               "tradeoff": records.write_csv(table, out / "tradeoff.csv"),
               "plot_data": records.write_csv(plots.series_table(table, x="macs", series=["criterion", "phase"],
                                                                 y="test_accuracy"),
                                              out / "plot_data" / "accuracy_vs_macs.csv"),
               "report": records.write_csv(example.report, out / "report.csv"),
               "latency": records.write_csv(latency, out / "latency.csv"),
               "figure": out / "accuracy_vs_macs.png", "latency_figure": out / "latency.png"}
    plots.pruning_tradeoff(table, written["figure"],
                           title=f"Residual CNN on {dataset}: whole-model pruning (test split)")
    plots.latency_vs_macs(latency, written["latency_figure"],
                          title=f"Residual CNN: compiled inference, batch {metrics['params'].get('latency_batch')}")
    return written

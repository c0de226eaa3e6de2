"""Steps of ``notebooks/50-nsdropout.ipynb``: seed 002's NSDropout claims reproduced under the original protocol,
then measured under a correct one, with leakage controls and the model's dependence on the mask.

Both protocols train seed 002's 784-128-128-128-10 MLP full-batch (one Adam step per epoch, lr 0.005, decay
5e-7, L2 on the first layer), with NSDropout or standard dropout (rate 0.2) after the first hidden layer.

* ``original``: a pool of labelled training images (10 000 in the original) shuffled with seed 22, split
  80 % train / 20 % mask split. NSDropout builds its masks from the mask split, picks its epoch by the ORACLE
  accuracy on that same split, and is scored on test with the oracle (true-label) mask: the label leak.
  The standard-dropout baseline trains on the same 80 % and picks its epoch on 1 600 images (in the original:
  official test[:1 600], which overlaps the test set; here, to keep the test split out of model selection,
  the first 80 % of the mask split: the one deliberate deviation).
* ``corrected``: ``val`` is the prepared validation split; the labelled pool is carved into train and mask
  split; masks come from train vs mask split only; each label-free inference mode picks its own epoch on val;
  test is scored once per mode at that epoch. The baseline trains on train + mask split (the same labelled
  data) with the same selection rule. Several seeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd

from masklab import data, models, paths, plots, records, surgery, training
from masklab.layers import NSDropout, NSDropoutPredictor, NSDropoutRefresh

LABEL_FREE_MODES = ("none", "predicted", "all")
ALL_MODES = LABEL_FREE_MODES + ("oracle",)
STANDARD = "standard dropout"


def inputs(split: data.Split) -> np.ndarray:
    """Flattened images scaled to [-1, 1], as the original notebooks did."""
    return data.to_inputs(split.x, flatten=True, scale="symmetric")


# ---------------------------------------------------------------------------------------------------- splits


def _subset(split: data.Split, rows: np.ndarray, name: str) -> data.Split:
    return data.Split(name, split.x[rows], split.y[rows], split.pool, split.indices[rows], split.dataset)


def original_splits(splits: data.Splits, *, pool_size: int, mask_fraction: float, baseline_selection: float = 0.8,
                    shuffle_seed: int = 22) -> dict[str, data.Split]:
    """The original protocol's splits: ``train``, ``mask`` (also its scored selection split) and ``selection``
    (the baseline's: the first ``baseline_selection`` of ``mask``), plus the untouched ``test``.

    The labelled pool is the whole training pool (prepared ``train`` + ``val``) in the published order, shuffled
    with ``np.random.RandomState(shuffle_seed)`` (the original seeded NumPy with 22), first ``pool_size`` images
    (capped at the pool; mnist_5k has 4 000).
    """
    merged = np.concatenate([splits.train.indices, splits.val.indices])
    order = np.argsort(merged, kind="stable")  # back to the published order of the training pool
    x = np.concatenate([splits.train.x, splits.val.x])[order]
    y = np.concatenate([splits.train.y, splits.val.y])[order]
    pool = data.Split("pool", x, y, "train", merged[order], splits.dataset)
    taken = np.random.RandomState(shuffle_seed).permutation(len(pool))[:min(pool_size, len(pool))]
    n_train = int(round(len(taken) * (1 - mask_fraction)))
    mask = _subset(pool, taken[n_train:], "mask")
    return {"train": _subset(pool, taken[:n_train], "train"), "mask": mask,
            "selection": _subset(mask, np.arange(int(round(len(mask) * baseline_selection))), "selection"),
            "test": splits.test}


def corrected_splits(splits: data.Splits, *, pool_size: int, mask_fraction: float, seed: int) -> dict[str, data.Split]:
    """``train`` / ``mask`` / ``val`` / ``test``: the prepared ``train`` split (subsampled, stratified, to
    ``pool_size`` labelled images when larger) carved into train and a stratified mask split; ``val`` and
    ``test`` are the prepared ones, untouched. Disjoint by construction."""
    pool = splits.train
    if len(pool) > pool_size:
        _, taken = data.stratified_indices(pool.y, pool_size, seed, "pool_size")
        pool = _subset(pool, taken, "train")
    train, mask = data.carve(pool, mask_fraction, seed + 1, "mask")
    return {"train": train, "mask": mask, "val": splits.val, "test": splits.test}


def split_summary(parts: dict[str, data.Split]) -> dict:
    """Sizes and fingerprints, and a check that no two splits share a sample of the same pool."""
    for a in parts:
        for b in parts:
            if a < b and (a, b) != ("mask", "selection") and parts[a].pool == parts[b].pool and \
                    np.intersect1d(parts[a].indices, parts[b].indices).size:
                raise ValueError(f"splits {a!r} and {b!r} share samples")
    return {name: {"size": len(s), "fingerprint": s.fingerprint} for name, s in parts.items()}


# -------------------------------------------------------------------------------------------------- training


class AccuracyMonitor(keras.callbacks.Callback):
    """Accuracy of named splits under inference modes, per epoch; the best weights per mode on one split.

    Every epoch: ``selection_split`` under ``selection_modes``; a strictly better accuracy stores the weights
    (NSDropout's class masks included), so ties keep the earlier epoch. Every ``curve_every`` epochs (and the
    first): every split under ``curve_modes``, for the curves. ``rows``: ``epoch``, ``split``, ``mode``,
    ``accuracy``. ``test`` may be among the curve splits (a diagnostic plot); it never enters the selection.
    """

    def __init__(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], *, selection_split: str, selection_modes,
                 curve_modes=(), curve_every: int | None = None, curve_splits=None, classify=None, router=None):
        """``classify``: ``model -> f(x, y, modes) -> {mode: classes}`` (default :func:`classifier`);
        ``router``: a label-free NSDropout router whose state is stored with each best epoch's weights."""
        super().__init__()
        if selection_split == "test":
            raise ValueError("The test split never selects an epoch. Received: selection_split='test'")
        self.parts, self.selection_split = parts, selection_split
        self.curve_splits = tuple(curve_splits if curve_splits is not None else parts)
        self.selection_modes, self.curve_modes = tuple(selection_modes), tuple(curve_modes)
        self.curve_every = curve_every
        self.classifier_factory, self.router = classify or classifier, router
        self.rows, self.best = [], {}

    def on_train_begin(self, logs=None):
        self.classify = self.classifier_factory(self.model)

    def on_epoch_end(self, epoch, logs=None):
        on_curve = self.curve_every and (epoch == 0 or (epoch + 1) % self.curve_every == 0)
        for name, (x, y) in self.parts.items():
            modes = list(self.curve_modes) if on_curve and name in self.curve_splits else []
            if name == self.selection_split:
                modes = list(dict.fromkeys([*self.selection_modes, *modes]))
            if not modes:
                continue
            accuracies = {m: float(np.mean(c == y)) for m, c in self.classify(x, y, modes).items()}
            if on_curve and name in self.curve_splits:
                self.rows += [{"epoch": epoch + 1, "split": name, "mode": m, "accuracy": accuracies[m]}
                              for m in self.curve_modes]
            if name == self.selection_split:
                for mode in self.selection_modes:
                    if mode not in self.best or accuracies[mode] > self.best[mode]["accuracy"]:
                        self.best[mode] = {"epoch": epoch + 1, "accuracy": accuracies[mode],
                                           "weights": self.model.get_weights(),
                                           "router_state": self.router and self.router.get_state()}


def classifier(model: keras.Model):
    """``f(x, y, modes) -> {mode: classes}`` for either kind of model. A standard-dropout model has one mode,
    ``standard dropout``; an NSDropout model's modes are those of ``NSDropoutPredictor`` (``y`` is passed on
    only when ``oracle`` is asked for)."""
    if not any(isinstance(layer, NSDropout) for layer in model.layers):
        def standard(x, y, modes):
            return {STANDARD: np.asarray(model.predict_on_batch(x)).argmax(-1)}
        return standard
    predictor = NSDropoutPredictor(model)

    def nsdropout(x, y, modes):
        return predictor.predict_classes_by_mode(x, modes, y if "oracle" in modes else None)
    return nsdropout


@dataclass
class Run:
    """One trained model and its monitor (curves, best epoch per mode). The model holds its last epoch's weights
    until ``use_best`` / ``score`` put back those of a mode's selected epoch."""

    model: keras.Model
    monitor: AccuracyMonitor
    label: str
    history: list = field(default_factory=list)  # each epoch's training logs
    routing: object = None  # the NSDropoutRouting callback of a label-free routed run (notebook 51)

    def use_best(self, mode: str) -> dict:
        """Put back the weights (and class masks) of the epoch ``mode`` selected; returns that record."""
        if mode not in self.monitor.best:
            raise ValueError(f"No epoch was selected for mode {mode!r}; selected modes: {sorted(self.monitor.best)}")
        best = self.monitor.best[mode]
        self.model.set_weights(best["weights"])
        if self.monitor.router is not None:
            self.monitor.router.set_state(best["router_state"])
        return best

    def score(self, mode: str, x: np.ndarray, y: np.ndarray, score_modes=None) -> dict:
        """Set the weights of ``mode``'s best epoch and score ``(x, y)`` once under ``score_modes`` (default:
        ``mode`` alone). Returns ``{"best_epoch", "selection_accuracy", "accuracy": {mode: ...}}``."""
        best = self.use_best(mode)
        modes = tuple(score_modes or (mode,))
        classes = self.monitor.classify(x, y, modes)  # the monitor's classifier: no new model to trace
        return {"best_epoch": best["epoch"], "selection_accuracy": best["accuracy"],
                "accuracy": {m: float(np.mean(classes[m] == y)) for m in modes}}


def train_full_batch(kind: str, train: tuple[np.ndarray, np.ndarray], mask: tuple | None, monitor: AccuracyMonitor,
                     *, num_classes: int, epochs: int, learning_rate: float, decay: float, l2: float, rate: float,
                     hidden_units=(128, 128, 128), rescale_inference: bool = True, mask_labels="true",
                     fixed_masks: np.ndarray | None = None, seed: int = 0, label: str = "", metrics=()) -> Run:
    """Train seed 002's MLP full-batch (one Adam step per epoch) with ``kind`` ``"nsdropout"`` or ``"dropout"``.

    NSDropout refreshes every step (the original schedule) against ``mask`` ``(x, y)``. ``mask_labels``:
    ``"true"``; ``"shuffled"`` (control: masks routed and computed from a fixed random permutation of the
    labels, on both train and mask split); ``fixed_masks`` ``(classes, units)``: never refreshed (control).
    ``metrics``: compiled metrics (e.g. ``["accuracy"]``: the training step's accuracy, dropout masks on).
    """
    x, y = train
    training.enable_determinism(seed)
    refresh = "never" if fixed_masks is not None else "step"
    model = models.dropout_mlp(x.shape[1], hidden_units, num_classes, dropout=kind, rate=rate, first_layer_l2=l2,
                               refresh=refresh, rescale_inference=rescale_inference, seed=seed)
    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)
    model.compile(keras.optimizers.Adam(schedule, epsilon=1e-7), "sparse_categorical_crossentropy",
                  metrics=list(metrics) or None, jit_compile="auto")
    callbacks = [monitor]
    fit_inputs = x
    if kind == "nsdropout":
        route, mask_route = y, mask[1]
        if mask_labels == "shuffled":
            rng = np.random.default_rng(seed + 7)
            route, mask_route = rng.permutation(y), rng.permutation(mask[1])
        elif mask_labels != "true":
            raise ValueError(f"mask_labels must be 'true' or 'shuffled'. Received: mask_labels={mask_labels!r}")
        if fixed_masks is not None:
            model.get_layer("dropout").set_class_masks(fixed_masks)
        fit_inputs = [x, route]
        callbacks.insert(0, NSDropoutRefresh((mask[0], mask_route)))
    print(f"training {label or kind} (seed {seed}{', ' + mask_labels + ' mask labels' if kind == 'nsdropout' else ''}"
          f"{', fixed masks' if fixed_masks is not None else ''}): {epochs} full-batch steps", flush=True)
    with surgery.new_models_traced():  # this model's (and its predictor's) functions are traced once each
        history = fit_full_batch(model, fit_inputs, y, epochs=epochs, callbacks=callbacks)
    return Run(model, monitor, label or kind, history)


def fit_full_batch(model: keras.Model, x, y, *, epochs: int, callbacks=()) -> list[dict]:
    """``epochs`` full-batch steps, the callbacks' epoch hooks after each. Equivalent to ``model.fit(x, y,
    batch_size=len(y), shuffle=False)``, but calls the compiled step directly (``train_on_batch``): with one step
    per epoch, fit's per-epoch data pipeline would cost more than the step itself. Returns each epoch's logs."""
    callback_list = keras.callbacks.CallbackList(list(callbacks), model=model)
    callback_list.on_train_begin()
    history = []
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        logs = model.train_on_batch(x, y, return_dict=True)
        callback_list.on_epoch_end(epoch, logs)
        history.append(dict(logs))
    callback_list.on_train_end()
    return history


def random_class_masks(num_classes: int, units: int, rate: float, seed: int) -> np.ndarray:
    """``(classes, units)`` KEEP masks, each dropping ``round(units * rate)`` units chosen at random."""
    rng = np.random.default_rng(seed)
    masks = np.ones((num_classes, units), dtype=np.float32)
    n_drop = int(round(units * rate))
    for row in masks:  # one row per class: 10 rows, not a hot path
        row[rng.choice(units, n_drop, replace=False)] = 0.0
    return masks


# ---------------------------------------------------------------------------------------------- the protocols


def _xy(split: data.Split) -> tuple[np.ndarray, np.ndarray]:
    return inputs(split), split.y


def run_original(parts: dict[str, data.Split], *, curve_every: int, **fit) -> dict[str, Run]:
    """NSDropout (mask split = selection split, oracle) and standard dropout, as the original ran them."""
    xy = {name: _xy(s) for name, s in parts.items()}
    nsd_monitor = AccuracyMonitor({k: xy[k] for k in ("train", "mask", "test")}, selection_split="mask",
                                  selection_modes=("oracle",), curve_modes=ALL_MODES, curve_every=curve_every)
    std_monitor = AccuracyMonitor({k: xy[k] for k in ("train", "mask", "selection", "test")},
                                  selection_split="selection", selection_modes=(STANDARD,), curve_modes=(STANDARD,),
                                  curve_every=curve_every, curve_splits=("train", "mask", "test"))
    return {"nsdropout": train_full_batch("nsdropout", xy["train"], xy["mask"], nsd_monitor, rescale_inference=False,
                                          label="NSDropout", **fit),
            "standard": train_full_batch("dropout", xy["train"], None, std_monitor, label=STANDARD, **fit)}


def score_original(runs: dict[str, Run], parts: dict[str, data.Split]) -> dict:
    """Test scores: NSDropout at its oracle-chosen epoch, under every mode (oracle = the reported number)."""
    x_test, y_test = _xy(parts["test"])
    return {"nsdropout": runs["nsdropout"].score("oracle", x_test, y_test, ALL_MODES),
            "standard_dropout": runs["standard"].score(STANDARD, x_test, y_test)}


def run_corrected(parts: dict[str, data.Split], *, seed: int, curve_every: int | None, **fit) -> dict:
    """One seed of the corrected protocol; returns the test scores and the two runs."""
    xy = {name: _xy(s) for name, s in parts.items()}
    curve_parts = {k: xy[k] for k in ("train", "mask", "val", "test")} if curve_every else {"val": xy["val"]}
    nsd_monitor = AccuracyMonitor(curve_parts, selection_split="val", selection_modes=LABEL_FREE_MODES,
                                  curve_modes=ALL_MODES if curve_every else (), curve_every=curve_every)
    nsd = train_full_batch("nsdropout", xy["train"], xy["mask"], nsd_monitor, seed=seed, label="NSDropout", **fit)
    pooled = (np.concatenate([xy["train"][0], xy["mask"][0]]), np.concatenate([xy["train"][1], xy["mask"][1]]))
    std_parts = {"train": pooled, "val": xy["val"], "test": xy["test"]} if curve_every else {"val": xy["val"]}
    std_monitor = AccuracyMonitor(std_parts, selection_split="val", selection_modes=(STANDARD,),
                                  curve_modes=(STANDARD,) if curve_every else (), curve_every=curve_every)
    std = train_full_batch("dropout", pooled, None, std_monitor, seed=seed, label=STANDARD, **fit)
    x_test, y_test = xy["test"]
    scores = {"nsdropout": {mode: nsd.score(mode, x_test, y_test) for mode in LABEL_FREE_MODES},
              "standard_dropout": std.score(STANDARD, x_test, y_test)}
    return {"scores": scores, "runs": {"nsdropout": nsd, "standard": std}}


def run_corrected_seeds(parts: dict[str, data.Split], seeds, *, curve_every: int, **fit) -> tuple[dict, list, dict]:
    """The corrected protocol for every seed (same splits, seed-dependent initial weights and Bernoulli masks);
    curves for the first seed only. Returns (summary over seeds, per-seed scores, the first seed's runs)."""
    per_seed, first_runs = [], None
    for i, seed in enumerate(seeds):
        result = run_corrected(parts, seed=seed, curve_every=curve_every if i == 0 else None, **fit)
        per_seed.append({"seed": seed, **result["scores"]})
        first_runs = first_runs or result["runs"]
    return summarize_seeds(per_seed), per_seed, first_runs


def summarize_seeds(per_seed: list[dict]) -> dict:
    """Mean and std (ddof=1) over seeds of every test accuracy, with the per-seed values and epochs."""
    def stats(values):
        values = np.asarray(values, dtype=float)
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "per_seed": values.tolist()}
    summary = {"standard_dropout": {**stats([s["standard_dropout"]["accuracy"][STANDARD] for s in per_seed]),
                                    "best_epochs": [s["standard_dropout"]["best_epoch"] for s in per_seed]},
               "nsdropout": {}}
    for mode in LABEL_FREE_MODES:
        summary["nsdropout"][mode] = {**stats([s["nsdropout"][mode]["accuracy"][mode] for s in per_seed]),
                                      "best_epochs": [s["nsdropout"][mode]["best_epoch"] for s in per_seed]}
    return summary


# --------------------------------------------------------------------------------------- controls, dependence


def mask_only_probe(model: keras.Model, input_dim: int) -> dict:
    """An all-zero input with the mask of class k: does the prediction name k? ``accuracy`` over the classes
    (chance 1 / classes; 1.0 means the mask alone carries the label)."""
    _, per_mask = NSDropoutPredictor(model).outputs_under_every_mask(np.zeros((1, input_dim), np.float32))
    predicted = per_mask[:, 0].argmax(-1)
    return {"accuracy": float(np.mean(predicted == np.arange(len(predicted)))), "predicted": predicted.tolist()}


def mask_dependence(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict]:
    """``(K, K)`` matrix ``M[k, j]``: the fraction of class-j images predicted as k when class k's mask is
    applied, and ``follow_rate``: over all (image, mask of ANOTHER class) pairs, how often the prediction is
    the mask's class. A model that ignores the mask follows a wrong mask only where it errs anyway."""
    _, per_mask = NSDropoutPredictor(model).outputs_under_every_mask(x)
    predicted = per_mask.argmax(-1)  # (K, N)
    k = per_mask.shape[0]
    follows = predicted == np.arange(k)[:, None]  # (K, N): prediction == the mask's class
    one_hot = np.eye(k)[y]  # (N, K)
    matrix = (follows.astype(float) @ one_hot) / one_hot.sum(0)
    wrong_mask = np.arange(k)[:, None] != y[None, :]
    return matrix, {"follow_rate": float(follows[wrong_mask].mean()),
                    "own_mask_accuracy": float(follows[~wrong_mask].mean())}


def run_controls(parts: dict[str, data.Split], original_run: Run, *, seed: int, **fit) -> tuple[dict, dict]:
    """The original protocol retrained with shuffled-label masks and with fixed random class masks; with the
    original run: test accuracy (oracle and none), the mask-only probe and the follow rate of each."""
    xy = {name: _xy(s) for name, s in parts.items()}
    units = original_run.model.get_layer("dropout").units
    runs = {"true-label masks (original)": original_run}
    for label, extra in (("shuffled-label masks", {"mask_labels": "shuffled"}),
                         ("random class masks", {"fixed_masks": random_class_masks(fit["num_classes"], units,
                                                                                   fit["rate"], seed)})):
        monitor = AccuracyMonitor({"mask": xy["mask"]}, selection_split="mask", selection_modes=("oracle",))
        runs[label] = train_full_batch("nsdropout", xy["train"], xy["mask"], monitor, rescale_inference=False,
                                       seed=seed, label=label, **extra, **fit)
    x_test, y_test = xy["test"]
    controls = {}
    for label, run in runs.items():
        scored = run.score("oracle", x_test, y_test, ("oracle", "none"))
        _, dependence = mask_dependence(run.model, x_test, y_test)
        controls[label] = {**scored, "mask_only_probe": mask_only_probe(run.model, x_test.shape[1]), **dependence}
    return controls, runs


# --------------------------------------------------------------------------------------------------- outputs


def curves(runs: dict[str, Run]) -> pd.DataFrame:
    """Tidy per-epoch accuracies of the given runs (``protocol`` from the dict key, ``model`` from the run)."""
    frames = []
    for protocol, run in runs.items():
        frame = pd.DataFrame(run.monitor.rows)
        if len(frame):
            frame.insert(0, "protocol", protocol.split(":")[0])
            frame.insert(1, "model", run.label)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def largest_drops(curve_table: pd.DataFrame) -> dict:
    """Per protocol / model / split / mode: the largest fall of accuracy between two consecutive curve points,
    and the epoch where it ends (the "sudden drops" of the original)."""
    drops = {}
    for (protocol, model, split, mode), group in curve_table.groupby(["protocol", "model", "split", "mode"]):
        group = group.sort_values("epoch")
        falls = -group["accuracy"].diff().to_numpy()[1:]
        if len(falls):
            i = int(np.argmax(falls))
            drops[f"{protocol} / {model} / {split} / {mode}"] = {"drop": float(falls[i]),
                                                                 "epoch": int(group["epoch"].iloc[i + 1])}
    return drops


def error_table(metrics: dict, dataset: str) -> str:
    """The README's table format (error % = 100 * (1 - test accuracy)) for one dataset."""
    def err(accuracy):
        return f"{100 * (1 - accuracy):.2f}"

    def err_pm(stats):  # the error's std equals the accuracy's std
        return f"{100 * (1 - stats['mean']):.2f} ± {100 * stats['std']:.2f}"
    original, corrected = metrics["original"], metrics["corrected"]
    n = len(corrected["standard_dropout"]["per_seed"])
    rows = [("Standard dropout, original protocol", err(original["standard_dropout"]["accuracy"][STANDARD])),
            ("NSDropout, original protocol (oracle: true-label mask at test)",
             err(original["nsdropout"]["accuracy"]["oracle"])),
            (f"Standard dropout, corrected protocol ({n} seeds)", err_pm(corrected["standard_dropout"]))]
    rows += [(f"NSDropout, corrected protocol, inference `{mode}` ({n} seeds)",
              err_pm(corrected["nsdropout"][mode])) for mode in LABEL_FREE_MODES]
    lines = [f"| test error % (1 - accuracy) | {dataset} |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def headline_metrics(metrics: dict) -> dict:
    """``metrics.json``: test error (1 - accuracy) of the seed's table: ``original_*`` under the original
    protocol (``oracle``: the true label's mask at test), ``error_*`` under the corrected one (mean over seeds;
    NSDropout with each label-free inference mode)."""
    original, corrected = metrics["original"], metrics["corrected"]
    headline = {"original_error_dropout": 1 - original["standard_dropout"]["accuracy"][STANDARD],
                "original_error_oracle": 1 - original["nsdropout"]["accuracy"]["oracle"],
                "error_dropout": 1 - corrected["standard_dropout"]["mean"]}
    for mode in LABEL_FREE_MODES:
        headline[f"error_nsdropout_{mode}"] = 1 - corrected["nsdropout"][mode]["mean"]
    return headline


def chosen_epochs(metrics: dict) -> dict:
    """(protocol, mode) -> the epoch chosen on the selection split, for the curves (drawn for the first seed).
    Under the original protocol one oracle-chosen epoch serves every NSDropout mode."""
    original, corrected = metrics["original"], metrics["corrected"]
    chosen = {("original", mode): original["nsdropout"]["best_epoch"] for mode in ALL_MODES}
    chosen[("original", STANDARD)] = original["standard_dropout"]["best_epoch"]
    chosen.update({("corrected", mode): corrected["nsdropout"][mode]["best_epochs"][0] for mode in LABEL_FREE_MODES})
    chosen[("corrected", STANDARD)] = corrected["standard_dropout"]["best_epochs"][0]
    return chosen


def save_nsdropout(metrics: dict, curve_table: pd.DataFrame, dependence: dict[str, np.ndarray], dataset: str,
                   class_names, results_dir: str | os.PathLike | None = None) -> dict:
    """metrics.json, table.md, curves.csv, accuracy_curves.png, mask_dependence.png (+ .csv)."""
    out = paths.stage_results_dir("nsdropout", dataset, results_dir)
    tidy_dependence = pd.concat([
        pd.DataFrame(matrix, index=pd.Index(range(len(matrix)), name="mask_class"),
                     columns=range(len(matrix))).reset_index().melt(id_vars="mask_class", var_name="image_class",
                                                                    value_name="fraction_predicted_as_mask_class")
        .assign(model=name) for name, matrix in dependence.items()], ignore_index=True)
    written = {"metrics": records.write_metrics(headline_metrics(metrics), out / "metrics.json"),
               "results": records.write_json(metrics, out / "results.json"),
               "table": out / "table.md",
               "curves": records.write_csv(curve_table, out / "curves.csv"),
               "dependence": records.write_csv(tidy_dependence, out / "mask_dependence.csv"),
               "curves_figure": out / "accuracy_curves.png", "dependence_figure": out / "mask_dependence.png"}
    written["table"].write_text(error_table(metrics, dataset))
    for protocol in ("original", "corrected"):  # the test-split panels of accuracy_curves.png, for `dvc plots`
        test_curves = curve_table[(curve_table["protocol"] == protocol) & (curve_table["split"] == "test")]
        written[f"plot_data_{protocol}"] = records.write_csv(
            plots.series_table(test_curves, x="epoch", series="mode", y="accuracy"),
            out / "plot_data" / f"test_accuracy_{protocol}_protocol.csv")
    plots.nsdropout_curves(curve_table, written["curves_figure"], chosen_epochs=chosen_epochs(metrics),
                           title=f"Seed 002's MLP on {dataset}, full batch: accuracy per epoch by inference mode")
    plots.mask_dependence(dependence, written["dependence_figure"], class_names=class_names,
                          title=f"{dataset} test images: predicted class when class k's mask is applied")
    return written

"""Steps of ``notebooks/51-nsdropout-leak-free.ipynb``: does any use of class-conditional masks that needs no
label at inference help, compared with the dropout family? And seed 002's "presentation" run, with and without
its label leak.

Every comparison runs under the corrected protocol of notebook 50 (:mod:`masklab.experiments.nsdropout`): the
same labelled pool for every method (NSDropout-kind methods carve their mask split out of it, the others train
on all of it), the epoch chosen on ``val`` separately for every (method, inference mode), ``test`` scored once
at that epoch, several seeds on the same splits (the seed changes initial weights and dropout draws).

Methods (``METHODS``; ``dropout`` is the layer after the first hidden layer, or after the CNN's last pooling):

* ``standard dropout``; ``curriculum dropout`` (rate ramped up, Morerio et al. 2017); ``targeted dropout``
  (only the lowest-magnitude units can be dropped, Gomez et al. 2019): the dropout family, inference ``none``;
* ``NSDropout, label routing``: seed 002's layer, each training sample routed by its label; no label at
  inference (modes ``none``, ``predicted``, ``all`` of :class:`~masklab.layers.NSDropoutPredictor`);
* ``NSDropout, predicted-class routing`` / ``k-means routing`` / ``single class-free mask``: the routes come from
  a label-free :mod:`~masklab.layers.nsdropout_routing` router in training AND at inference (mode ``routed``),
  or no mask at inference (``none``).

Each (method, mode) is compared with standard dropout by the paired difference of test error over seeds (same
seed, same splits): mean and a Student-t 95 % interval.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pandas as pd
from scipy import stats

from masklab import data, models, paths, plots, records, surgery, training
from masklab.experiments import nsdropout as base
from masklab.layers import (ClusterRouter, NSDropoutPredictor, NSDropoutRefresh, NSDropoutRouting,
                            PredictedClassRouter, SingleMaskRouter, fit_routed)

STANDARD = base.STANDARD
FAMILY = {"standard dropout": "dropout", "curriculum dropout": "curriculum", "targeted dropout": "targeted"}
ROUTERS = {"NSDropout, predicted-class routing": "predicted", "NSDropout, k-means routing": "kmeans",
           "NSDropout, single class-free mask": "single"}
LABEL_ROUTED = "NSDropout, label routing"
METHODS = (*FAMILY, LABEL_ROUTED, *ROUTERS)


def method_modes(method: str) -> tuple[str, ...]:
    """The label-free inference modes scored for ``method``."""
    if method in FAMILY:
        return ("none",)
    if method == LABEL_ROUTED:
        return base.LABEL_FREE_MODES
    if method in ROUTERS:
        return ("none", "routed")
    raise ValueError(f"method must be one of {METHODS}. Received: method={method!r}")


def check_methods(methods) -> tuple[str, ...]:
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "standard dropout" not in methods:
        raise ValueError(f"methods must be among {METHODS} and include 'standard dropout' (the reference of the "
                         f"paired differences). Received: {list(methods)}")
    return methods


def make_router(method: str, num_classes: int, *, refit_every: int, seed: int):
    kind = ROUTERS[method]
    if kind == "predicted":
        return PredictedClassRouter()
    if kind == "kmeans":
        return ClusterRouter(num_classes, refit_every=refit_every, seed=seed)
    return SingleMaskRouter()


def plain_classifier(model):
    """``f(x, y, modes) -> {"none": classes}`` for a dropout-family model (dropout off at inference)."""
    def classify(x, y, modes):
        return {"none": np.asarray(model.predict_on_batch(x)).argmax(-1)}
    return classify


def routed_classifier(router):
    """``model -> f(x, y, modes)`` for a routed NSDropout model: ``none`` (no mask) and ``routed``."""
    def factory(model):
        predictor = NSDropoutPredictor(model)

        def classify(x, y, modes):
            hidden = predictor.hidden(x)
            out = {}
            if "none" in modes:
                out["none"] = predictor.outputs_from_hidden(hidden).argmax(-1)
            if "routed" in modes:
                out["routed"] = predictor.outputs_from_hidden(hidden, router.route(predictor, hidden)).argmax(-1)
            return out
        return classify
    return factory


# ------------------------------------------------------------------------------------------------- training


def build(arch: str, method: str, input_shape, num_classes: int, *, rate: float, seed: int, fit: dict) -> keras.Model:
    """The model of ``method`` on architecture ``"mlp"`` (seed 002's, full-batch Adam with decay) or ``"cnn"``
    (seed 004's, mini-batch Adam), compiled."""
    kind = FAMILY.get(method, "nsdropout")
    options = {"curriculum": {"gamma": fit["curriculum_gamma"]},
               "targeted": {"targeted_fraction": fit["targeted_fraction"]}}.get(kind)
    layer_rate = fit["targeted_rate"] if kind == "targeted" else rate
    mask_classes = 1 if ROUTERS.get(method) == "single" else None
    # full batch: masks recomputed in every step (the original schedule); mini-batch: at every epoch end
    if arch == "mlp":
        model = models.dropout_mlp(int(np.prod(input_shape)), fit["hidden_units"], num_classes, dropout=kind,
                                   rate=layer_rate, first_layer_l2=fit["l2"], refresh="step",
                                   mask_classes=mask_classes, dropout_options=options, seed=seed)
        schedule = keras.optimizers.schedules.InverseTimeDecay(fit["learning_rate"], decay_steps=1,
                                                               decay_rate=fit["decay"])
        optimizer = keras.optimizers.Adam(schedule, epsilon=1e-7)
    elif arch == "cnn":
        model = models.seed_cnn(tuple(input_shape), num_classes, dropout=kind, rate=layer_rate, refresh="epoch",
                                mask_classes=mask_classes, dropout_options=options, seed=seed)
        optimizer = keras.optimizers.Adam(fit["learning_rate"])
    else:
        raise ValueError(f"arch must be 'mlp' or 'cnn'. Received: arch={arch!r}")
    model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile="auto")
    return model


def train_method(arch: str, method: str, xy: dict, *, num_classes: int, seed: int, fit: dict) -> base.Run:
    """Train one method on one seed; the monitor keeps each mode's best epoch on ``val``."""
    training.enable_determinism(seed)
    x_train, y_train = xy["train"]
    x_mask, y_mask = xy["mask"]
    model = build(arch, method, x_train.shape[1:], num_classes, rate=fit["rate"], seed=seed, fit=fit)
    modes = method_modes(method)
    router = (make_router(method, num_classes, refit_every=fit["cluster_refit_every"], seed=seed)
              if method in ROUTERS else None)
    classify = routed_classifier(router) if router else plain_classifier if method in FAMILY else None
    monitor = base.AccuracyMonitor({"val": xy["val"]}, selection_split="val", selection_modes=modes,
                                   classify=classify, router=router)
    batch_size = fit.get("batch_size")  # None: full batch
    epochs = fit["epochs"]
    print(f"training {method} ({arch}, seed {seed}): {epochs} epochs"
          f"{' of one full-batch step' if batch_size is None else f', batch {batch_size}'}", flush=True)
    with surgery.new_models_traced():  # this model's (and its predictor's) functions are traced once each
        routing = NSDropoutRouting(router, x_train, x_mask) if router is not None else None
        if routing is not None:
            fit_routed(model, routing, y_train, epochs=epochs, batch_size=batch_size, callbacks=[monitor], seed=seed)
        elif method == LABEL_ROUTED:
            inputs = [x_train, y_train.astype(np.float32)]
            callbacks = [NSDropoutRefresh((x_mask, y_mask)), monitor]
            _fit(model, inputs, y_train, epochs=epochs, batch_size=batch_size, callbacks=callbacks, seed=seed)
        else:  # the dropout family trains on the whole labelled pool: train + mask split
            pooled_x, pooled_y = np.concatenate([x_train, x_mask]), np.concatenate([y_train, y_mask])
            _fit(model, pooled_x, pooled_y, epochs=epochs, batch_size=batch_size, callbacks=[monitor], seed=seed)
    return base.Run(model, monitor, method, routing=routing)


def _fit(model, x, y, *, epochs, batch_size, callbacks, seed):
    if batch_size is None:
        base.fit_full_batch(model, x, y, epochs=epochs, callbacks=callbacks)
    else:  # keras shuffles with the seed set by training.enable_determinism
        model.fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, shuffle=True, verbose=0)


def check_seeds(seeds) -> list[int]:
    seeds = list(seeds) if isinstance(seeds, (list, tuple, np.ndarray)) else None
    if not seeds or len(set(seeds)) != len(seeds) or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct non-negative integers (paired differences "
                         f"pair runs by seed). Received: seeds={seeds!r}")
    return [int(s) for s in seeds]


def run_comparison(arch: str, parts: dict[str, data.Split], *, num_classes: int, methods, seeds,
                   fit: dict) -> pd.DataFrame:
    """Every method x seed under the corrected protocol. Tidy rows: ``method``, ``mode``, ``seed``,
    ``best_epoch``, ``val_accuracy``, ``test_error``, and for routed methods ``epochs_with_absent_routes``
    (epoch ends at which some route had no training or no mask-split sample and kept its mask)."""
    seeds = check_seeds(seeds)
    methods = check_methods(methods)
    inputs = (lambda s: base.inputs(s)) if arch == "mlp" else images
    xy = {name: (inputs(s), s.y) for name, s in parts.items()}
    rows = []
    for seed in seeds:
        for method in methods:
            run = train_method(arch, method, xy, num_classes=num_classes, seed=seed, fit=fit)
            x_test, y_test = xy["test"]
            for mode in method_modes(method):
                with surgery.new_models_traced():  # the first trace of this model's predict on the test size
                    scored = run.score(mode, x_test, y_test)  # test scored once, at the epoch val chose for mode
                rows.append({"method": method, "mode": mode, "seed": seed, "best_epoch": scored["best_epoch"],
                             "val_accuracy": scored["selection_accuracy"],
                             "test_error": 1.0 - scored["accuracy"][mode],
                             "epochs_with_absent_routes": (len(run.routing.absent_routes) if run.routing else np.nan)})
    return pd.DataFrame(rows)


def images(split: data.Split) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> float32 (N, H, W, C) in [0, 1] (seed 004's inputs)."""
    x = data.to_inputs(split.x, flatten=False)
    return x[..., None] if x.ndim == 3 else x


# ---------------------------------------------------------------------------------------------- statistics


def paired_differences(scores: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (method, mode): test error mean and std (ddof 1) over seeds, mean val accuracy (the selection
    split's, at the chosen epochs), and the paired difference against standard dropout on the same seed: mean,
    Student-t ``confidence`` interval (n - 1 degrees of freedom)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1). Received: confidence={confidence!r}")
    repeated = scores.duplicated(["method", "mode", "seed"])
    if repeated.any():
        raise ValueError(f"Each (method, mode) needs one score per seed. Received repeated rows: "
                         f"{scores.loc[repeated, ['method', 'mode', 'seed']].to_dict('records')[:3]}")
    reference = scores[scores["method"] == "standard dropout"].set_index("seed")["test_error"]
    if reference.empty:
        raise ValueError("scores hold no 'standard dropout' rows: the reference of the paired differences.")
    rows = []
    for (method, mode), group in scores.groupby(["method", "mode"], sort=False):
        errors = group.set_index("seed")["test_error"]
        if set(errors.index) != set(reference.index):
            raise ValueError(f"{method} / {mode} was scored on seeds {sorted(errors.index)}, standard dropout on "
                             f"{sorted(reference.index)}: paired differences need the same seeds.")
        difference = (errors - reference.loc[errors.index]).to_numpy()
        n = len(difference)
        half = (stats.t.ppf(0.5 + confidence / 2, n - 1) * difference.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        rows.append({"method": method, "mode": mode, "seeds": n, "confidence": confidence,
                     "error_mean": errors.mean(), "error_std": errors.std(ddof=1) if n > 1 else np.nan,
                     "val_accuracy_mean": group["val_accuracy"].mean() if "val_accuracy" in group else np.nan,
                     "difference_mean": difference.mean(), "difference_low": difference.mean() - half,
                     "difference_high": difference.mean() + half})
    return pd.DataFrame(rows)


def verdict(summary: pd.DataFrame) -> str:
    """One plain sentence: which (method, mode) rows beat standard dropout with the interval below zero."""
    others = summary[summary["method"] != "standard dropout"]
    better = others[others["difference_high"] < 0]
    worse = others[others["difference_low"] > 0]
    n, level = int(summary["seeds"].max()), f"{100 * float(summary['confidence'].iloc[0]):g} %"
    if better.empty:
        return (f"No variant lowers the test error below standard dropout's with a {level} interval excluding "
                f"zero ({n} seeds); {len(worse)} of {len(others)} are significantly worse.")
    names = "; ".join(f"{r.method} ({r.mode}): {100 * r.difference_mean:+.2f} points" for r in better.itertuples())
    return f"Lower test error than standard dropout, {level} interval below zero ({n} seeds): {names}."


def comparison_table(summary: pd.DataFrame, title: str) -> str:
    level = f"{100 * float(summary['confidence'].iloc[0]):g} %"
    lines = [f"| {title} | inference | test error % (mean ± std) | minus standard dropout, points [{level} CI] |",
             "|---|---|---|---|"]
    for r in summary.itertuples():
        difference = ("—" if r.method == "standard dropout" else
                      f"{100 * r.difference_mean:+.2f} [{100 * r.difference_low:+.2f}, {100 * r.difference_high:+.2f}]")
        lines.append(f"| {r.method} | {r.mode} | {100 * r.error_mean:.2f} ± {100 * r.error_std:.2f} | {difference} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- the presentation variant


def run_presentation(splits: data.Splits, *, pool_size: int, mask_fraction: float, shuffle_seed: int, seeds,
                     fit: dict) -> dict:
    """Seed 002's presentation run (a small pool, a wider MLP, few epochs) under both protocols.

    ``original``: the original's splits (``pool_size`` images shuffled with ``shuffle_seed``), trained ``epochs``
    full-batch steps and scored at the LAST epoch, as the original printed it: the training step's accuracy
    (masks on), and test under every mode, ``oracle`` being the original's number; standard dropout on the same
    training images alongside. ``corrected``: per seed, the same number of labelled images from the training
    pool, epoch chosen on val per label-free mode, test once; standard dropout on all of them.
    """
    original_parts = base.original_splits(splits, pool_size=pool_size, mask_fraction=mask_fraction,
                                          shuffle_seed=shuffle_seed)
    xy = {name: base._xy(s) for name, s in original_parts.items()}
    monitor = base.AccuracyMonitor({"mask": xy["mask"]}, selection_split="mask", selection_modes=("oracle",))
    nsd = base.train_full_batch("nsdropout", xy["train"], xy["mask"], monitor, rescale_inference=False,
                                label="NSDropout (presentation)", metrics=["accuracy"], seed=seeds[0], **fit)
    x_test, y_test = xy["test"]
    with surgery.new_models_traced():  # first traces of this model's predict on the test and train sizes
        classes = nsd.monitor.classify(x_test, y_test, base.ALL_MODES)  # last epoch's weights: no use_best
        train_classes = nsd.monitor.classify(*xy["train"], ("oracle", "none"))
    std_monitor = base.AccuracyMonitor({"mask": xy["mask"]}, selection_split="mask", selection_modes=(STANDARD,))
    std = base.train_full_batch("dropout", xy["train"], None, std_monitor, label=STANDARD, metrics=["accuracy"],
                                seed=seeds[0], **fit)
    with surgery.new_models_traced():
        std_test = std.monitor.classify(x_test, y_test, (STANDARD,))[STANDARD]
    original = {
        "epochs": fit["epochs"], "splits": base.split_summary(original_parts),
        "nsdropout": {"training_step_accuracy": float(nsd.history[-1]["accuracy"]),
                      "train_accuracy": {m: float(np.mean(c == xy["train"][1])) for m, c in train_classes.items()},
                      "test_accuracy": {m: float(np.mean(c == y_test)) for m, c in classes.items()}},
        "standard_dropout": {"training_step_accuracy": float(std.history[-1]["accuracy"]),
                             "test_accuracy": float(np.mean(std_test == y_test))}}
    corrected_parts = base.corrected_splits(splits, pool_size=pool_size, mask_fraction=mask_fraction, seed=seeds[0])
    corrected = base.run_corrected_seeds(corrected_parts, seeds, curve_every=None, **fit)[0]
    corrected["splits"] = base.split_summary(corrected_parts)
    return {"original": original, "corrected": corrected}


def presentation_table(result: dict, dataset: str) -> str:
    original, corrected = result["original"], result["corrected"]
    n = len(corrected["standard_dropout"]["per_seed"])
    nsd = original["nsdropout"]

    def err(accuracy):
        return f"{100 * (1 - accuracy):.2f}"

    def err_pm(s):
        return f"{100 * (1 - s['mean']):.2f} ± {100 * s['std']:.2f}"
    rows = [(f"Standard dropout, original protocol (epoch {original['epochs']})",
             err(original["standard_dropout"]["test_accuracy"]),
             err(original["standard_dropout"]["training_step_accuracy"])),
            (f"NSDropout, original protocol, `oracle` (true-label mask at test; epoch {original['epochs']})",
             err(nsd["test_accuracy"]["oracle"]), err(nsd["training_step_accuracy"]))]
    rows += [(f"NSDropout, original protocol, `{m}` (no label)", err(nsd["test_accuracy"][m]), "")
             for m in base.LABEL_FREE_MODES]
    rows.append((f"Standard dropout, corrected protocol ({n} seeds)", err_pm(corrected["standard_dropout"]), ""))
    rows += [(f"NSDropout, corrected protocol, `{m}` ({n} seeds)", err_pm(corrected["nsdropout"][m]), "")
             for m in base.LABEL_FREE_MODES]
    lines = [f"| presentation variant, {dataset} | test error % | training-step error % (masks on) |",
             "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- outputs


def headline_rows(summary: pd.DataFrame) -> dict:
    """The rows the headline metrics report, chosen WITHOUT the test split: standard dropout, and of the other
    dropout-family methods and of the NSDropout (method, mode) rows the one with the best mean val accuracy."""
    is_nsd = summary["method"].str.startswith("NSDropout")
    groups = {"dropout": summary["method"] == "standard dropout",
              "family": ~is_nsd & (summary["method"] != "standard dropout"), "nsd": is_nsd}
    chosen = {}
    for name, rows in groups.items():
        if rows.any():
            best = summary[rows].sort_values("val_accuracy_mean", ascending=False, kind="stable").iloc[0]
            chosen[name] = {"method": best["method"], "mode": best["mode"], "error_mean": float(best["error_mean"]),
                            "val_accuracy_mean": float(best["val_accuracy_mean"])}
    return chosen


def headline_metrics(summaries: dict[str, pd.DataFrame], presentation: dict) -> dict:
    """``metrics.json`` (a few scalars, one ``dvc metrics show`` row): per architecture the mean test error of
    standard dropout (``*_dropout``) and of the NSDropout (method, mode) with the best mean val accuracy
    (``*_nsd``; which one, and the best other dropout-family method: ``headline_rows`` in results.json);
    the presentation run's oracle error (original protocol) and its corrected errors, NSDropout with
    ``predicted`` inference and standard dropout."""
    metrics = {}
    for arch, summary in summaries.items():
        for name, row in headline_rows(summary).items():
            if name != "family":  # in results.json (headline_rows): at most 8 metrics fit one row
                metrics[f"{arch}_{name}"] = row["error_mean"]
    corrected = presentation["corrected"]
    metrics["show_oracle"] = 1 - presentation["original"]["nsdropout"]["test_accuracy"]["oracle"]
    metrics["show_nsd_predicted"] = 1 - corrected["nsdropout"]["predicted"]["mean"]
    metrics["show_dropout"] = 1 - corrected["standard_dropout"]["mean"]
    return metrics


def save_variants(scores: dict[str, pd.DataFrame], presentation: dict, extra: dict, dataset: str,
                  results_dir: str | os.PathLike | None = None) -> dict:
    """``results/nsdropout/<dataset>/leak_free/``: scores.csv (per seed), comparison.csv and .md (per method and
    mode), presentation.md, results.json, metrics.json, comparison.png."""
    out = paths.stage_results_dir("nsdropout", dataset, results_dir) / "leak_free"
    summaries = {arch: paired_differences(table) for arch, table in scores.items()}
    tidy_scores = pd.concat([t.assign(arch=a) for a, t in scores.items()], ignore_index=True)
    tidy_summary = pd.concat([s.assign(arch=a) for a, s in summaries.items()], ignore_index=True)
    sentences = {arch: verdict(summary) for arch, summary in summaries.items()}
    titles = {"mlp": "seed 002's MLP (full batch)", "cnn": "seed 004's CNN (masks over channels, mini-batch)"}
    comparison = "\n".join(f"{comparison_table(s, titles[a])}\n{sentences[a]}\n" for a, s in summaries.items())
    written = {"scores": records.write_csv(tidy_scores, out / "scores.csv"),
               "summary": records.write_csv(tidy_summary, out / "comparison.csv"),
               "comparison": out / "comparison.md", "presentation": out / "presentation.md",
               "results": records.write_json({"presentation": presentation, "verdict": sentences,
                                              "headline_rows": {a: headline_rows(s) for a, s in summaries.items()},
                                              **extra}, out / "results.json"),
               "metrics": records.write_metrics(headline_metrics(summaries, presentation), out / "metrics.json"),
               "figure": out / "comparison.png"}
    written["comparison"].write_text(comparison)
    written["presentation"].write_text(presentation_table(presentation, dataset))
    plots.variant_comparison(tidy_scores, tidy_summary, written["figure"],
                             panel_titles={a: titles[a] for a in scores},
                             title=f"{dataset}: leak-free NSDropout variants vs the dropout family (test split)")
    return written

"""Figures (seaborn). Every function takes tidy data and a path, saves a PNG with fixed dpi and no
software/date metadata so reruns give the same bytes, and returns the matplotlib figure."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; notebooks still show the returned figure
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

DPI = 120

# identifiers found in the tables -> how legends, titles and ticks say them; others: "_" read as a space
WORDS = {
    # ablation strategies (masklab.ablation.STRATEGIES) and unit removal (masklab.experiments.surgery)
    "lowest_activation": "lowest mean activation first",
    "highest_activation": "highest mean activation first",
    "smallest_weight_norm": "smallest weight norm first",
    "weight_norm": "smallest weight norm first",
    "lowest_selectivity": "least class-selective first",
    "highest_selectivity": "most class-selective first",
    "lowest_importance": "least important first",
    "highest_importance": "most important first",
    # pruning criteria (masklab.surgery.CRITERIA) and phases (masklab.experiments.pruning.prune_sweep)
    "l1": "smallest L1 norm",
    "l2": "smallest L2 norm",
    "bn_scale": "smallest BatchNorm scale",
    "activation": "smallest mean |activation|",
    "apoz": "most often zero",
    "pruned": "right after pruning",
    "recalibrated": "after re-estimating BatchNorm statistics",
    "fine-tuned": "after fine-tuning",
    # NSDropout inference modes (masklab.layers.nsdropout.INFERENCE_MODES)
    "none": "none: no mask",
    "predicted": "predicted: mask of the predicted class",
    "all": "all: every class's mask",
    "oracle": "oracle: the true label's mask",
    # layers
    "hidden_1": "hidden layer 1",
    "hidden_2": "hidden layer 2",
    "conv_1": "conv layer 1",
    "conv_2": "conv layer 2",
    "dense_512": "512-unit dense layer",
    # SparseDense fan scaling (masklab.layers.sparse_dense.FAN_SCALINGS)
    "connected": "each unit's real fan-in",
    "full": "full shape (as Dense)",
    "nnz": "flat nnz vector (P-NET)",
}
# the mask names of masklab.experiments.masks.example_masks, said in words
MASK_WORDS = (
    (r"^all units kept$", "none (all units kept)"),
    (r"^random (\d+)% off$", r"a random \1 %"),
    (r"^train's (\d+) most active off$", r"the \1 most active on the training images"),
    (r"^this image's (\d+) most active off$", r"the \1 most active on this image"),
    (r"^all but this image's (\d+) most active off$", r"all but the \1 most active on this image"),
)


def words(name) -> str:
    """How an identifier from a table (strategy, criterion, mode, layer, ...) reads in a figure."""
    name = str(name)
    return WORDS.get(name, name.replace("_", " "))


def series_table(table: pd.DataFrame, *, x: str, series: str | list[str], y: str, names=None) -> pd.DataFrame:
    """A line figure's data the way ``dvc plots`` draws it: one row per ``x`` value, one column per series (the
    mean of ``y`` over repeats, named in words as in the figure's legend). Written next to the PNG as
    ``plot_data/<figure>.csv`` and declared in ``dvc.yaml``'s top-level ``plots``. ``names``: how a series value
    reads (default :func:`words`); series keep the order of their values."""
    names = names or words
    wide = table.pivot_table(index=x, columns=series, values=y, aggfunc="mean", sort=True)
    wide.columns = [", ".join(names(v) for v in column) if isinstance(column, tuple) else names(column)
                    for column in wide.columns]
    return wide.reset_index()


def _mask_words(name: str) -> str:
    for pattern, replacement in MASK_WORDS:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return name


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def learning_curve(history: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Accuracy and loss per epoch, train vs val, the selected (best-on-val) epoch marked.

    ``history``: the DataFrame of ``masklab.training.train`` (columns ``epoch``, ``accuracy``,
    ``val_accuracy``, ``loss``, ``val_loss``, ``is_best``).
    """
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        tidy = history.melt(id_vars="epoch", value_vars=[metric, f"val_{metric}"], var_name="split",
                            value_name="value")
        tidy["split"] = tidy["split"].map({metric: "training", f"val_{metric}": "validation"})
        sns.lineplot(data=tidy, x="epoch", y="value", hue="split", marker="o", ax=ax)
        ax.set_ylabel(metric)
        best = history.loc[history["is_best"], "epoch"]
        if len(best):
            ax.axvline(int(best.iloc[0]), color="grey", linestyle="--", linewidth=1,
                       label="epoch chosen on validation")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def _accuracy_curve(table: pd.DataFrame, x: str, hue: str, xlabel: str, legend_title: str, path,
                    title: str) -> plt.Figure:
    """Test accuracy vs ``x``, one line per ``hue`` (in words, under ``legend_title``), a 95 % bootstrap band
    where there are several repeats."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    shown = table.assign(**{legend_title: table[hue].map(words)})
    sns.lineplot(data=shown, x=x, y="accuracy", hue=legend_title, marker="o", errorbar=("ci", 95), seed=0, ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def accuracy_drop(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Accuracy vs fraction of units switched off, one line per strategy; the band is a 95 % bootstrap
    interval over repeats (only ``random`` has several). ``table``: ``masklab.ablation.ablation_curve``."""
    return _accuracy_curve(table, "fraction", "strategy", "fraction of hidden units switched off",
                           "units switched off", path, title)


def mask_examples(image, table: pd.DataFrame, path: str | os.PathLike, *, true_label=None, class_names=None,
                  title: str = "") -> plt.Figure:
    """One input image (with its true label) and its class probabilities under each named mask.

    ``table``: tidy ``mask`` / ``class`` / ``probability`` (``masklab.experiments.masks.example_predictions``).
    ``true_label``: the image's class, an index into ``class_names`` (without them: shown as given); its tick
    label is drawn in bold.
    """
    sns.set_theme(style="whitegrid")
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(1, 4))
    ax_img.imshow(image.squeeze(), cmap="gray_r")
    ax_img.set_axis_off()
    true_name = None
    if true_label is not None:
        true_name = str(class_names[int(true_label)] if class_names is not None else true_label)
    ax_img.set_title("test image" if true_name is None else f"test image\ntrue label: {true_name}", fontsize=10)
    shown = table.assign(**{"class": table["class"].astype(str), "mask": table["mask"].map(_mask_words)})
    sns.barplot(data=shown, x="class", y="probability", hue="mask", ax=ax_bar)
    ax_bar.set_ylim(0, 1)
    ax_bar.set_ylabel("predicted probability")
    ax_bar.legend(title="hidden units switched off", fontsize=8, title_fontsize=9, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))
    ticks = ax_bar.get_xticklabels()
    if max(len(t.get_text()) for t in ticks) > 3:  # class names, not digits: slanted so they cannot overlap
        plt.setp(ticks, rotation=30, ha="right", rotation_mode="anchor")
    for tick in ticks:
        if tick.get_text() == true_name:
            tick.set_fontweight("bold")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def pathway_task(models: pd.DataFrame, knockout: pd.DataFrame, saliency: pd.DataFrame, path: str | os.PathLike, *,
                 title: str = "") -> plt.Figure:
    """Three panels (``masklab.experiments.sparse``): test accuracy per model (``pathway_model_table``); mean
    |d p / d gene| per gene group and model (``input_saliency``, log scale: an exact 0 is drawn at the axis
    floor and labelled); test accuracy drop when one pathway unit of the true-pathway model is switched off,
    sorted, causal pathways in colour (``unit_knockout``)."""
    sns.set_theme(style="whitegrid")
    fig, (ax_models, ax_saliency, ax_drop) = plt.subplots(1, 3, figsize=(16, 4.4), width_ratios=(2, 3, 3))
    sns.barplot(data=models, x="model", y="test_accuracy", hue="model", ax=ax_models, legend=False)
    for container in ax_models.containers:
        ax_models.bar_label(container, fmt="%.3f", fontsize=9)
    ax_models.set_ylim(0, 1)
    ax_models.set_xlabel("")
    ax_models.set_ylabel("test accuracy")
    ax_models.tick_params(axis="x", labelsize=8)

    positive = saliency.loc[saliency["mean_abs_gradient"] > 0, "mean_abs_gradient"]
    floor = float(positive.min()) / 10 if len(positive) else 1e-8
    shown = saliency.assign(value=saliency["mean_abs_gradient"].clip(lower=floor))
    sns.barplot(data=shown, x="genes", y="value", hue="model", ax=ax_saliency)
    for container, (_, part) in zip(ax_saliency.containers, shown.groupby("model", sort=False)):
        labels = ["exactly 0" if v == 0 else "" for v in part["mean_abs_gradient"]]
        ax_saliency.bar_label(container, labels=labels, fontsize=8, rotation=90, padding=3)
    ax_saliency.set_yscale("log")
    ax_saliency.set_ylim(bottom=floor)
    ax_saliency.set_xlabel("")
    ax_saliency.set_ylabel("mean |d p(y=1) / d gene|")
    ax_saliency.tick_params(axis="x", labelsize=8)
    ax_saliency.legend(fontsize=8)

    ordered = knockout.sort_values("accuracy_drop", ascending=False, kind="stable").reset_index(drop=True)
    ordered["rank"] = ordered.index + 1
    ordered["pathway kind"] = ordered["causal"].map({True: "causal (label depends on it)", False: "other"})
    sns.scatterplot(data=ordered, x="rank", y="accuracy_drop", hue="pathway kind", style="pathway kind",
                    hue_order=["causal (label depends on it)", "other"], s=30, ax=ax_drop)
    ax_drop.set_xlabel("hidden unit (one per pathway), sorted by drop")
    ax_drop.set_ylabel("test accuracy drop when switched off")
    ax_drop.set_title("true-pathway model: one unit off at a time", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def hierarchy_knockout(path_table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """One panel per level of a multi-level pathway network (``masklab.experiments.hierarchy.knockout_summary``
    rows): increase of the test loss when the causal unit is switched off, next to the largest increase of any
    other unit of that level; one point per seed, for the true hierarchy and the shuffled control."""
    sns.set_theme(style="whitegrid")
    long = path_table.melt(id_vars=["seed", "hierarchy", "level"],
                           value_vars=["causal_loss_increase", "largest_other_loss_increase"], var_name="unit",
                           value_name="loss_increase")
    long["unit"] = long["unit"].map({"causal_loss_increase": "causal unit",
                                     "largest_other_loss_increase": "largest other unit"})
    long["hierarchy"] = long["hierarchy"].map({"true": "true hierarchy", "shuffled": "shuffled control"})
    levels = sorted(long["level"].unique())
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 4), sharey=True, squeeze=False)
    for ax, level in zip(axes[0], levels):
        sns.stripplot(data=long[long["level"] == level], x="hierarchy", y="loss_increase", hue="unit", dodge=True,
                      order=["true hierarchy", "shuffled control"], hue_order=["causal unit", "largest other unit"],
                      palette=["tab:red", "tab:gray"], size=7, jitter=0.15, ax=ax, legend=ax is axes[0][-1])
        ax.set_title(f"level {level}" + (" (pathways)" if level == 1 else ""), fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("test cross-entropy increase when switched off")
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.01, 1.0), title="", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def fan_scaling(init: pd.DataFrame, models: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Two panels (``masklab.experiments.hierarchy.run_hierarchy``): std of each level's output at
    initialization per fan scaling (mean over seeds, log scale); test accuracy after training per fan scaling
    (one point per seed, the shuffled control for reference)."""
    sns.set_theme(style="whitegrid")
    fig, (ax_init, ax_accuracy) = plt.subplots(1, 2, figsize=(13.5, 4.8))
    order = list(dict.fromkeys(init["fan_scaling"]))
    shown = init.assign(fan_scaling=init["fan_scaling"].map(words))
    sns.lineplot(data=shown, x="level", y="output_std", hue="fan_scaling", hue_order=[words(f) for f in order],
                 marker="o", errorbar=None, ax=ax_init)
    ax_init.set_yscale("log")
    ax_init.set_xticks(sorted(init["level"].unique()))
    ax_init.set_xlabel("level (1: pathways)")
    ax_init.set_ylabel("std of the level's output at initialization")
    ax_init.legend(title="initial weights scaled by", fontsize=8, title_fontsize=8)
    runs = models.assign(run=[words(f) if h == "true" else f"shuffled control ({words(f)})"
                              for h, f in zip(models["hierarchy"], models["fan_scaling"])])
    run_order = list(dict.fromkeys([words(f) for f in order] + list(runs["run"])))
    sns.stripplot(data=runs, x="run", y="test_accuracy", order=run_order, color="tab:blue", size=7, jitter=0.1,
                  ax=ax_accuracy)
    means = runs.groupby("run")["test_accuracy"].mean()
    ax_accuracy.hlines([means[r] for r in run_order], [i - 0.3 for i in range(len(run_order))],
                       [i + 0.3 for i in range(len(run_order))], colors="black", linewidth=2, label="mean over seeds")
    ax_accuracy.set_xticks(range(len(run_order)), [textwrap.fill(r, 16) for r in run_order])
    ax_accuracy.legend(fontsize=8)
    ax_accuracy.set_xlabel("")
    ax_accuracy.set_ylabel("test accuracy (one point per seed)")
    ax_accuracy.tick_params(axis="x", labelsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def accuracy_vs_density(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Test accuracy vs connection density (log scale, ticked at the measured densities), one line per
    connectivity kind, the dense layer as a dashed line.
    ``table``: ``masklab.experiments.sparse.receptive_field_sweep``."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sparse = table[table["connectivity"] != "dense"]
    sns.lineplot(data=sparse, x="density", y="test_accuracy", hue="connectivity", marker="o", ax=ax)
    for row in sparse[sparse["connectivity"] == "local patches"].itertuples():
        ax.annotate(f"k={int(row.patch)}", (row.density, row.test_accuracy), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    dense = table[table["connectivity"] == "dense"]
    if len(dense):
        ax.axhline(float(dense["test_accuracy"].iloc[0]), color="grey", linestyle="--", linewidth=1,
                   label=f"dense ({float(dense['test_accuracy'].iloc[0]):.3f})")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(sorted(sparse["density"].unique())))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda density, _: f"{100 * density:.2g} %"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("input-to-hidden connections present (log scale)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def receptive_fields(kernel, image_shape, path: str | os.PathLike, *, units: int = 8, title: str = "") -> plt.Figure:
    """The first ``units`` columns of a trained ``(pixels, units)`` kernel drawn as images on one diverging colour
    scale, symmetric around 0 (white), with a colour bar (colour inputs: the mean over channels); each unit's
    weights are confined to its patch."""
    sns.set_theme(style="white")
    fig, axes = plt.subplots(1, units, figsize=(1.5 * units + 0.6, 2.1), layout="constrained")
    height, width = image_shape[:2]
    fields = [kernel[:, j].reshape(height, width, -1).mean(axis=-1) for j in range(units)]
    limit = max(float(abs(weights).max()) for weights in fields) or 1.0
    for j, (ax, weights) in enumerate(zip(axes, fields)):
        image = ax.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_axis_off()
        ax.set_title(f"unit {j}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    return fig


def accuracy_vs_removed(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Test accuracy vs number of units removed, one line per choice (``weight_norm``, ``random`` with a 95 %
    bootstrap band over draws). ``table``: ``masklab.experiments.surgery.accuracy_vs_removed``."""
    return _accuracy_curve(table, "removed", "how", "units removed from the 512-unit dense layer", "units removed",
                           path, title)


SPLIT_ORDER = ("train", "mask", "selection", "val", "test")
# one fixed colour per inference mode in every NSDropout figure; the baseline in black
MODE_COLORS = {"none": "#1f77b4", "predicted": "#ff7f0e", "all": "#2ca02c", "oracle": "#d62728",
               "standard dropout": "#222222"}
# "predicted" often coincides with "none": dashed and drawn after it, so that both stay visible
MODE_DASHES = {"predicted": (4, 2)}


def nsdropout_curves(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "",
                     chosen_epochs: dict | None = None) -> plt.Figure:
    """Accuracy per epoch: one row of panels per protocol, one column per split, one line per inference mode
    (``standard dropout`` for the baseline); a panel without curves says so.

    ``table``: ``masklab.experiments.nsdropout.curves``. ``chosen_epochs``: ``{(protocol, mode): epoch}``, the
    epoch each mode selected, drawn across its protocol's row as a dotted vertical line in the mode's colour
    (modes that chose the same epoch share one line, their colours alternating along it).
    """
    sns.set_theme(style="whitegrid")
    splits = [s for s in SPLIT_ORDER if s in set(table["split"])]
    modes = [m for m in MODE_COLORS if m in set(table["mode"])] + sorted(set(table["mode"]) - set(MODE_COLORS))
    colors = dict(zip(modes, [MODE_COLORS.get(m) for m in modes]))
    colors.update({m: c for m, c in zip(modes, sns.color_palette("tab10", len(modes))) if colors[m] is None})
    labels = {m: words(m) for m in modes}
    dashes = {labels[m]: MODE_DASHES.get(m, "") for m in modes}
    grid = sns.relplot(data=table.assign(mode=table["mode"].map(labels)), x="epoch", y="accuracy", hue="mode",
                       hue_order=list(dashes), palette={labels[m]: colors[m] for m in modes}, style="mode",
                       style_order=list(dashes), dashes=dashes, row="protocol", col="split", col_order=splits,
                       kind="line", height=2.6, aspect=1.15, linewidth=1, alpha=0.85, legend=False,
                       facet_kws={"ylim": (0, 1.02), "margin_titles": True})
    grid.set_titles(row_template="{row_name} protocol", col_template="{col_name} split")
    filled = set(zip(table["protocol"], table["split"]))
    for (protocol, split), ax in grid.axes_dict.items():
        if (protocol, split) not in filled:
            ax.text(0.5, 0.5, f"no {split} split\nin the {protocol} protocol", transform=ax.transAxes, ha="center",
                    va="center", color="grey", fontsize=9)
    legend = {label: Line2D([], [], color=colors[m], linestyle=(0, dashes[label]) if dashes[label] else "-")
              for m, label in labels.items()}
    if chosen_epochs:
        sharing = {}
        for (protocol, mode), epoch in chosen_epochs.items():
            sharing.setdefault((protocol, int(epoch)), []).append(mode)
        for (protocol, epoch), shared in sharing.items():
            for i, mode in enumerate(shared):
                style = (2 * i, (2, 2 * len(shared)))  # dash i of every period: the colours alternate
                for split in splits:
                    if (protocol, split) in filled:
                        grid.axes_dict[(protocol, split)].axvline(epoch, color=colors.get(mode, "grey"),
                                                                  linestyle=style, linewidth=1.3)
        legend["epoch each mode chose\n(dotted, in its colour):"] = Line2D([], [], color="grey", linestyle=(0, (2, 2)))
        for protocol in dict.fromkeys(protocol for protocol, _ in sharing):
            chosen = [f"epoch {epoch}: {', '.join(shared)}" for (p, epoch), shared in sorted(sharing.items())
                      if p == protocol]
            legend["\n".join([f"{protocol} protocol", *chosen])] = Line2D([], [], linestyle="none")
    grid.add_legend(legend_data=legend, title="inference mode")
    if title:
        grid.figure.suptitle(title, y=1.02, fontsize=10)
    save_figure(grid.figure, path)
    return grid.figure


def mask_dependence(matrices: dict, path: str | os.PathLike, *, class_names=None, title: str = "") -> plt.Figure:
    """One heatmap per model: cell (k, j) = fraction of class-j images predicted as class k under class k's
    mask. A diagonal = accuracy with the true-label mask; bright off-diagonal cells = the mask decides."""
    sns.set_theme(style="white")
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.2 * len(matrices), 4.6), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        labels = class_names if class_names is not None else range(len(matrix))
        sns.heatmap(matrix, vmin=0, vmax=1, cmap="rocket_r", annot=len(matrix) <= 10, fmt=".2f",
                    annot_kws={"fontsize": 6}, xticklabels=labels, yticklabels=labels, cbar=False, ax=ax)
        ax.set_xlabel("class of the image (j)")
        ax.set_ylabel("class whose mask is applied (k)")
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


PHASE_DASHES = {"pruned": (1, 2), "recalibrated": (4, 2), "fine-tuned": ""}


def pruning_tradeoff(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Test accuracy vs multiply-accumulates per image (millions), one colour per criterion; dotted right after
    pruning, dashed after re-estimating the BatchNorm statistics, solid after fine-tuning; the fraction of
    channels removed annotated on the first criterion's fine-tuned line.
    ``table``: ``masklab.experiments.pruning.prune_sweep``."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    shown = table.assign(mmacs=table["macs"] / 1e6, **{"channels removed": table["criterion"].map(words),
                                                       "accuracy measured": table["phase"].map(words)})
    sns.lineplot(data=shown, x="mmacs", y="test_accuracy", hue="channels removed", style="accuracy measured",
                 style_order=[words(p) for p in PHASE_DASHES],
                 dashes={words(p): dashes for p, dashes in PHASE_DASHES.items()}, marker="o", ax=ax)
    labelled = shown[(shown["phase"] == "fine-tuned") & (shown["criterion"] == shown["criterion"].iloc[0])]
    for row in labelled.itertuples():
        ax.annotate(f"{row.fraction:.0%}", (row.mmacs, row.test_accuracy), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("multiply-accumulates per image (millions); % = share of channels removed")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, handlelength=4, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def latency_vs_macs(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Measured inference latency (ms per batch) vs multiply-accumulates, fractions annotated.
    ``table``: ``masklab.experiments.pruning.latency_sweep`` (wall-clock: differs from run to run)."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    shown = table.assign(mmacs=table["macs"] / 1e6)
    sns.lineplot(data=shown, x="mmacs", y="latency_ms", marker="o", ax=ax)
    for row in shown.itertuples():
        ax.annotate(f"{row.fraction:.0%}", (row.mmacs, row.latency_ms), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    ax.set_xlabel("multiply-accumulates per image (millions); % = share of channels removed")
    ax.set_ylabel("latency per batch (ms, median)")
    ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def ablation_by_randomization(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Morcos et al.'s figure: training accuracy vs the fraction of units ablated at random (both hidden layers),
    one line per share of randomized training labels, a 95 % bootstrap band over seeds and repeats.
    ``table``: ``masklab.experiments.unit_importance.memorization_experiment``'s curves."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    shown = table.assign(randomized=table["randomized"].map(lambda r: f"{r:.0%}"))
    sns.lineplot(data=shown, x="fraction", y="accuracy", hue="randomized", palette="viridis", marker="o",
                 markersize=4, errorbar=("ci", 95), seed=0, ax=ax)
    ax.set_xlabel("fraction of hidden units ablated (random, both layers)")
    ax.set_ylabel("training accuracy (own labels)")
    ax.set_ylim(0, 1.02)
    ax.legend(title="training labels randomized", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def selectivity_vs_importance(tables, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Left: MLP units (clean labels), selectivity vs overall accuracy drop when ablated alone (Morcos et al.).
    Middle / right: CNN units, selectivity vs the overall drop and vs the largest single-class drop (Zhou et al.).
    ``tables``: ``(mlp units, cnn units)`` of ``masklab.experiments.unit_importance``."""
    mlp, cnn = tables
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0), sharex=True)
    clean = mlp[mlp["randomized"] == 0]
    panels = ((clean, "accuracy_drop", "MLP (clean labels, training set)", "accuracy drop when ablated alone"),
              (cnn, "accuracy_drop", "seed 004's CNN (test split): overall drop", "accuracy drop when ablated alone"),
              (cnn, "max_class_drop", "seed 004's CNN (test split): largest class drop",
               "largest drop of one class's accuracy"))
    for ax, (units, column, panel_title, ylabel) in zip(axes, panels):
        sns.scatterplot(data=units.assign(layer=units["layer"].map(words)), x="selectivity", y=column, hue="layer",
                        s=10, alpha=0.6, ax=ax)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("class selectivity")
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def class_drop_heatmap(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "",
                       max_units: int = 64) -> plt.Figure:
    """Units x classes: the drop of each class's accuracy when one unit is ablated, one panel per layer, units
    sorted by selectivity (top: most selective; at most ``max_units`` per layer, the most selective).
    ``table``: per-unit effects (``drop_class_<c>`` columns) of one network."""
    layers = list(dict.fromkeys(table["layer"]))
    columns = [c for c in table.columns if c.startswith("drop_class_")]
    sns.set_theme(style="white")
    fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 7.5), squeeze=False)
    limit = max(float(table[columns].abs().max().max()), 1e-6)
    for ax, layer in zip(axes[0], layers):
        rows = table[table["layer"] == layer].sort_values("selectivity", ascending=False, kind="stable").head(max_units)
        matrix = rows[columns].to_numpy()
        sns.heatmap(matrix, cmap="vlag", vmin=-limit, vmax=limit, center=0, ax=ax,
                    xticklabels=[c.removeprefix("drop_class_") for c in columns],
                    yticklabels=[f"{u} ({s:.2f})" for u, s in zip(rows["unit"], rows["selectivity"])],
                    cbar_kws={"label": "class accuracy drop"})
        ax.tick_params(axis="y", labelsize=5)
        ax.set_xlabel("class")
        ax.set_ylabel("unit (selectivity)")
        ax.set_title(words(layer), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def class_targeted_ablation(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Bau et al.'s experiment: per class, the accuracy drop of that class and of all other classes when the
    class's most important units are ablated; one panel per layer, bars averaged over seeds (95 % interval).
    ``table``: ``masklab.experiments.unit_importance.class_targeted_ablation`` rows."""
    tidy = table.melt(id_vars=["layer", "target_class", "seed"], value_vars=["target_drop", "rest_drop"],
                      var_name="measured on", value_name="accuracy drop")
    tidy["measured on"] = tidy["measured on"].map({"target_drop": "that class", "rest_drop": "other classes"})
    tidy["layer"] = tidy["layer"].map(words)
    sns.set_theme(style="whitegrid")
    grid = sns.catplot(data=tidy, x="target_class", y="accuracy drop", hue="measured on", col="layer", kind="bar",
                       errorbar=("ci", 95), seed=0, height=3.6, aspect=1.4)
    grid.set_axis_labels("class whose top units are ablated", "test accuracy drop")
    grid.set_titles(col_template="{col_name}")
    if title:
        grid.figure.suptitle(title, y=1.03, fontsize=10)
    save_figure(grid.figure, path)
    return grid.figure


def variant_comparison(scores: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike, *,
                       panel_titles: dict | None = None, title: str = "") -> plt.Figure:
    """One row per architecture (``arch``): left, test error % of every (method, inference mode), one dot per
    seed and a bar at the mean; right, its paired difference from standard dropout (same seed), mean and the
    interval of ``summary`` (``difference_low`` / ``difference_high``, at its ``confidence``); left of the dashed
    zero = better."""
    sns.set_theme(style="whitegrid")
    archs = list(dict.fromkeys(scores["arch"]))
    heights = [0.32 * scores[scores["arch"] == a].groupby(["method", "mode"]).ngroups + 1.2 for a in archs]
    fig, axes = plt.subplots(len(archs), 2, figsize=(11, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for (left, right), arch in zip(axes, archs):
        rows = summary[summary["arch"] == arch].reset_index(drop=True)
        labels = [f"{m} · {mode}" for m, mode in zip(rows["method"], rows["mode"])]
        position = {(m, mode): i for i, (m, mode) in enumerate(zip(rows["method"], rows["mode"]))}
        seeds = scores[scores["arch"] == arch]
        y = [position[(m, mode)] for m, mode in zip(seeds["method"], seeds["mode"])]
        left.scatter(100 * seeds["test_error"], y, s=14, color="#4c72b0", alpha=0.7, label="one seed")
        left.scatter(100 * rows["error_mean"], range(len(rows)), marker="|", s=300, color="black", label="mean")
        errors = 100 * seeds["test_error"]
        wide = errors.max() > 10 * max(errors.min(), 1e-3)  # a log scale only when errors span a decade
        if wide:
            left.set_xscale("log")
            left.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            left.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        left.set_xlabel(f"test error %{' (log scale)' if wide else ''}")
        right.errorbar(100 * rows["difference_mean"], range(len(rows)),
                       xerr=[100 * (rows["difference_mean"] - rows["difference_low"]),
                             100 * (rows["difference_high"] - rows["difference_mean"])],
                       fmt="o", color="#c44e52", capsize=3)
        right.axvline(0, color="grey", linestyle="--", linewidth=1)
        right.set_xscale("symlog", linthresh=1)
        right.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:+g}"))
        level = f"{100 * float(rows['confidence'].iloc[0]):g} %" if "confidence" in rows else "95 %"
        right.set_xlabel(f"minus standard dropout, points ({level} CI, symlog)")
        for ax in (left, right):
            ax.set_yticks(range(len(rows)))
            ax.set_yticklabels(labels if ax is left else [], fontsize=8)
            ax.set_ylim(len(rows) - 0.5, -0.5)
        left.set_title((panel_titles or {}).get(arch, arch), fontsize=9, loc="left")
        left.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig

"""Figures (seaborn). Every function takes tidy data and a path, saves a PNG with fixed dpi and no
software/date metadata so reruns give the same bytes, and returns the matplotlib figure."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; notebooks still show the returned figure
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

DPI = 120


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
        tidy["split"] = tidy["split"].map({metric: "train", f"val_{metric}": "val"})
        sns.lineplot(data=tidy, x="epoch", y="value", hue="split", marker="o", ax=ax)
        ax.set_ylabel(metric)
        best = history.loc[history["is_best"], "epoch"]
        if len(best):
            ax.axvline(int(best.iloc[0]), color="grey", linestyle="--", linewidth=1, label="chosen on val")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def accuracy_drop(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Accuracy vs fraction of units switched off, one line per strategy; the band is a 95 % bootstrap
    interval over repeats (only ``random`` has several). ``table``: ``masklab.ablation.ablation_curve``."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(data=table, x="fraction", y="accuracy", hue="strategy", marker="o", errorbar=("ci", 95),
                 seed=0, ax=ax)
    ax.set_xlabel("fraction of hidden units switched off")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def mask_examples(image, table: pd.DataFrame, path: str | os.PathLike) -> plt.Figure:
    """One input image and its class probabilities under each named mask.

    ``table``: tidy ``mask`` / ``class`` / ``probability`` (``masklab.experiments.masks.example_predictions``).
    """
    sns.set_theme(style="whitegrid")
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(1, 4))
    ax_img.imshow(image.squeeze(), cmap="gray_r")
    ax_img.set_axis_off()
    ax_img.set_title("test image")
    sns.barplot(data=table, x="class", y="probability", hue="mask", ax=ax_bar)
    ax_bar.set_ylim(0, 1)
    ax_bar.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure(fig, path)
    return fig

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

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.text import Text

from masklab import plots

pytestmark = pytest.mark.backend_independent  # computes nothing with Keras: runs once (conftest.py)

FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MASKS = ("all units kept", "random 50% off", "train's 60 most active off", "this image's 60 most active off",
         "all but this image's 60 most active off")
IDENTIFIER = re.compile(r"[A-Za-z0-9]_[A-Za-z0-9]")


def history():
    return pd.DataFrame({"epoch": [1, 2, 3], "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.5, 0.65, 0.6],
                         "loss": [1.0, 0.7, 0.5], "val_loss": [1.0, 0.8, 0.9], "is_best": [False, True, False]})


def ablation_table():
    rows = [{"fraction": f, "strategy": s, "repeat": r, "accuracy": 0.9 - f / 2 - 0.01 * r}
            for s, repeats in (("random", 2), ("lowest_activation", 1), ("highest_activation", 1),
                               ("smallest_weight_norm", 1))
            for r in range(repeats) for f in (0.0, 0.5, 0.9)]
    return pd.DataFrame(rows)


def surgery_table():
    return pd.DataFrame([{"removed": n, "how": how, "repeat": r, "accuracy": 0.95 - n / 1000 - 0.01 * r}
                         for how, repeats in (("weight_norm", 1), ("random", 2)) for r in range(repeats)
                         for n in (0, 256, 500)])


def examples_table():
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"mask": m, "class": c, "probability": float(p)}
                         for m in MASKS for c, p in zip(FASHION, rng.dirichlet(np.ones(len(FASHION))))])


def density_table():
    rows = [{"model": "dense", "connectivity": "dense", "patch": None, "density": 1.0, "test_accuracy": 0.94}]
    for k, density in ((3, 0.0115), (9, 0.1033), (19, 0.4605)):
        rows += [{"model": f"{kind} k={k}", "connectivity": kind, "patch": k, "density": density,
                  "test_accuracy": 0.9 + k / 500} for kind in ("local patches", "random, same density")]
    return pd.DataFrame(rows)


def kernel():
    weights = np.zeros((28 * 28, 16))
    weights[:50, 0], weights[100:150, 1], weights[300:350, 2] = 0.1, -0.5, 0.3
    return weights


def nsdropout_table():
    rows = []
    for protocol, splits in (("original", ("train", "mask", "test")), ("corrected", ("train", "val", "test"))):
        for model, modes in (("NSDropout", ("none", "predicted", "all", "oracle")),
                             ("standard dropout", ("standard dropout",))):
            rows += [{"protocol": protocol, "model": model, "epoch": e, "split": s, "mode": m,
                      "accuracy": 0.1 if m in ("none", "predicted") else 0.9}
                     for s in splits for m in modes for e in (1, 5, 10, 15)]
    return pd.DataFrame(rows)


CHOSEN = {("corrected", "none"): 3, ("corrected", "predicted"): 3, ("corrected", "all"): 10,
          ("corrected", "standard dropout"): 15, ("original", "oracle"): 5, ("original", "standard dropout"): 10}


def pruning_table():
    return pd.DataFrame([{"fraction": f, "macs": 9e6 * (1 - f), "phase": phase, "criterion": criterion,
                          "test_accuracy": 0.95 - f / (2 + i)}
                         for criterion in ("l2", "bn_scale", "activation", "random")
                         for i, phase in enumerate(plots.PHASE_DASHES) for f in (0.0, 0.4, 0.8)])


def unit_tables():
    rng = np.random.default_rng(0)
    mlp = pd.DataFrame({"randomized": 0, "seed": 0, "layer": ["hidden_1", "hidden_2"] * 10, "unit": range(20),
                        "selectivity": rng.random(20), "accuracy_drop": rng.normal(0, 0.002, 20)})
    cnn = pd.DataFrame({"unit": range(20), "layer": ["conv_2", "dense_512"] * 10, "selectivity": rng.random(20),
                        "accuracy_drop": rng.normal(0, 0.002, 20), "max_class_drop": rng.random(20) / 50,
                        **{f"drop_class_{c}": rng.normal(0, 0.01, 20) for c in range(3)}, "seed": 4})
    return mlp, cnn


def targeted_table():
    return pd.DataFrame([{"layer": layer, "target_class": c, "seed": seed, "target_drop": 0.1 + 0.01 * seed,
                          "rest_drop": 0.001 * seed} for layer in ("conv_2", "dense_512") for c in range(3)
                         for seed in range(2)])


def pathway_tables():
    models = pd.DataFrame({"model": ["true pathways", "dense"], "test_accuracy": [0.71, 0.67]})
    knockout = pd.DataFrame({"unit": range(6), "causal": [True, False] * 3,
                             "accuracy_drop": [0.01, 0.0, 0.005, -0.001, 0.002, 0.0]})
    saliency = pd.DataFrame({"model": ["true pathways"] * 2 + ["dense"] * 2,
                             "genes": ["causal pathway genes", "genes in no pathway"] * 2,
                             "mean_abs_gradient": [0.004, 0.0, 0.002, 0.001]})
    return models, knockout, saliency


FIGURES = {
    "learning_curve": lambda path: plots.learning_curve(history(), path, title="t"),
    "accuracy_drop": lambda path: plots.accuracy_drop(ablation_table(), path, title="t"),
    "mask_examples": lambda path: plots.mask_examples(np.eye(28), examples_table(), path, true_label=9,
                                                      class_names=FASHION, title="One test image"),
    "pathway_task": lambda path: plots.pathway_task(*pathway_tables(), path, title="t"),
    "accuracy_vs_density": lambda path: plots.accuracy_vs_density(density_table(), path, title="t"),
    "receptive_fields": lambda path: plots.receptive_fields(kernel(), (28, 28, 1), path, title="t"),
    "accuracy_vs_removed": lambda path: plots.accuracy_vs_removed(surgery_table(), path, title="t"),
    "nsdropout_curves": lambda path: plots.nsdropout_curves(nsdropout_table(), path, title="t",
                                                            chosen_epochs=CHOSEN),
    "mask_dependence": lambda path: plots.mask_dependence({"a model": np.eye(3)}, path, title="t"),
    "pruning_tradeoff": lambda path: plots.pruning_tradeoff(pruning_table(), path, title="t"),
    "latency_vs_macs": lambda path: plots.latency_vs_macs(
        pd.DataFrame({"fraction": [0.0, 0.5], "macs": [9e6, 4e6], "latency_ms": [30.0, 20.0]}), path, title="t"),
    "ablation_by_randomization": lambda path: plots.ablation_by_randomization(
        pd.DataFrame({"fraction": [0.0, 0.5, 0.0, 0.5], "accuracy": [1.0, 0.8, 1.0, 0.5],
                      "randomized": [0.0, 0.0, 1.0, 1.0], "seed": 0}), path, title="t"),
    "selectivity_vs_importance": lambda path: plots.selectivity_vs_importance(unit_tables(), path, title="t"),
    "class_drop_heatmap": lambda path: plots.class_drop_heatmap(unit_tables()[1], path, title="t"),
    "class_targeted_ablation": lambda path: plots.class_targeted_ablation(targeted_table(), path, title="t"),
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def shown_texts(fig) -> list[str]:
    """Every non-empty visible string of a drawn figure: titles, axis and tick labels, legends, annotations."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def test_figures_are_byte_identical_across_reruns(tmp_path):
    plots.learning_curve(history(), tmp_path / "a.png", title="t")
    plots.learning_curve(history(), tmp_path / "b.png", title="t")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in (tmp_path / "a.png").read_bytes()


@pytest.mark.parametrize("name", ["mask_examples", "nsdropout_curves", "receptive_fields", "accuracy_vs_density"])
def test_new_figures_are_byte_identical_across_reruns(tmp_path, name):
    FIGURES[name](tmp_path / "a.png")
    FIGURES[name](tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_labels_and_legends_are_words_not_identifiers(tmp_path, name):
    texts = shown_texts(FIGURES[name](tmp_path / f"{name}.png"))
    assert texts
    assert [t for t in texts if IDENTIFIER.search(t)] == []


def test_words_maps_identifiers_and_falls_back_to_spaces():
    assert plots.words("lowest_activation") == "lowest mean activation first"
    assert plots.words("some_new_layer") == "some new layer"
    assert plots.words(3) == "3"


def test_mask_examples_has_a_title_the_true_label_and_readable_ticks(tmp_path):
    fig = FIGURES["mask_examples"](tmp_path / "m.png")
    assert fig.get_suptitle() == "One test image"
    assert any("true label: Ankle boot" in text for text in shown_texts(fig))
    bars = fig.axes[1]
    ticks = bars.get_xticklabels()
    assert [t.get_text() for t in ticks] == list(FASHION)
    assert [t.get_text() for t in ticks if t.get_fontweight() == "bold"] == ["Ankle boot"]
    # slanted labels are parallel bands: they cannot overlap when the bands are further apart than a line of text
    assert {t.get_rotation() for t in ticks} == {30}
    spacing = np.diff(bars.transData.transform([(x, 0) for x in bars.get_xticks()])[:, 0]).min()
    assert spacing * np.sin(np.radians(30)) > ticks[0].get_fontsize() * fig.dpi / 72
    legend = bars.get_legend()
    assert legend.get_title().get_text() == "hidden units switched off"
    assert "the 60 most active on the training images" in [t.get_text() for t in legend.get_texts()]


def test_mask_examples_keeps_its_old_call_and_digits_stay_upright(tmp_path):
    digits = examples_table().assign(**{"class": lambda t: t["class"].map(FASHION.index)})
    fig = plots.mask_examples(np.eye(28), digits, tmp_path / "m.png")
    assert fig.axes[0].get_title() == "test image"
    assert fig.get_suptitle() == ""
    assert {t.get_rotation() for t in fig.axes[1].get_xticklabels()} == {0}


def test_accuracy_vs_density_ticks_are_the_measured_densities(tmp_path):
    ax = FIGURES["accuracy_vs_density"](tmp_path / "d.png").axes[0]
    np.testing.assert_allclose(ax.get_xticks(), [0.0115, 0.1033, 0.4605])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1.1 %", "10 %", "46 %"]
    assert len(ax.xaxis.get_minorticklocs()) == 0


def test_receptive_fields_share_one_symmetric_scale_with_a_colour_bar(tmp_path):
    fig = FIGURES["receptive_fields"](tmp_path / "r.png")
    colour_bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 1
    assert colour_bars[0].get_ylabel() == "weight"
    limits = {ax.images[0].get_clim() for ax in fig.axes if ax.images}
    assert limits == {(-0.5, 0.5)}


def test_nsdropout_curves_mark_chosen_epochs_and_explain_empty_panels(tmp_path):
    fig = FIGURES["nsdropout_curves"](tmp_path / "n.png")
    assert len(fig.axes) == 8  # protocols x (train, mask, val, test)
    for ax in fig.axes:
        assert ax.lines or [t.get_text() for t in ax.texts] in (["no val split\nin the original protocol"],
                                                                ["no mask split\nin the corrected protocol"])

    def panels_marked(epoch):
        return sum(any(list(line.get_xdata()) == [epoch, epoch] for line in ax.lines) for ax in fig.axes)
    assert {epoch: panels_marked(epoch) for epoch in (3, 5, 10, 15)} == {3: 3, 5: 3, 10: 6, 15: 3}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "corrected protocol\nepoch 3: none, predicted\nepoch 10: all\nepoch 15: standard dropout" in legend

    curves = [line for line in fig.axes[0].lines if len(line.get_xdata()) > 2]
    by_colour = {to_hex(line.get_color()): i for i, line in enumerate(curves)}
    none, predicted = (curves[by_colour[plots.MODE_COLORS[m]]] for m in ("none", "predicted"))
    assert none.get_linestyle() != predicted.get_linestyle()
    assert by_colour[plots.MODE_COLORS["predicted"]] > by_colour[plots.MODE_COLORS["none"]]  # drawn on top


def test_nsdropout_curves_keep_their_old_call(tmp_path):
    fig = plots.nsdropout_curves(nsdropout_table(), tmp_path / "n.png", title="t")
    assert not any(len(set(line.get_xdata())) == 1 for ax in fig.axes for line in ax.lines)  # no epoch marked

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 21 · Which single units matter? Two published findings, checked
#
# `masklab.ablation` ablates any layer's units (Dense units, conv channels, sequence units), many ablations per compiled call. Here it checks two papers on `mnist_5k` (Fashion-MNIST with `make repro-full`), with several seeds and 95 % intervals, and says whether each finding holds here:
#
# * **Morcos et al. 2018**, *On the importance of single directions for generalization*: networks trained on partly randomized labels (they memorize) rely more on single directions: their cumulative random-ablation curves fall faster. And class selectivity is a poor predictor of a unit's importance.
# * **Zhou et al. 2018**, *Revisiting the importance of individual units in CNNs via ablation*: ablating one unit barely moves overall accuracy but can hurt single classes a lot, and selectivity predicts those per-class drops. Plus **Bau et al.**'s experiment: ablate a class's most important units; that class suffers, the others hardly.
#
# Data: networks train on `train`; the CNN picks its epoch on `val`; the units of the class-targeted ablation are chosen on `val`; `test` only measures. The memorization curves are measured on the training set with each network's own labels, as in the paper.

# %% tags=["parameters"]
dataset = "mnist_5k"          # params.yaml: datasets
randomized = [0.0, 0.25, 0.5, 0.75, 1.0]  # unit_importance.randomized: share of training labels randomized
seeds = [0, 1, 2]               # unit_importance.seeds: one network per seed and level
hidden_units = 256            # unit_importance.hidden_units: 784-H-H-10 MLP
max_epochs = 100              # unit_importance.max_epochs
target_accuracy = 0.99        # unit_importance.target_accuracy: train until the training accuracy reaches it
batch_size = 128              # unit_importance.batch_size
learning_rate = 0.001         # unit_importance.learning_rate (Adam)
n_fractions = 11              # unit_importance.n_fractions: ablated fractions 0, ..., 1
repeats = 5                   # unit_importance.repeats: random orders per network
cnn_layers = ["conv_2", "dense_512"]  # unit_importance.cnn_layers: seed 004's CNN, conv channels and dense units
cnn_epochs = 5                # unit_importance.cnn_epochs
top_fraction = 0.04            # unit_importance.top_fraction: Bau et al.'s share of a layer's units ablated per class
update_results = False        # True: write results/ and models/ (dvc repro sets it); False: scratch/
data_dir = None               # None: data/
results_dir = None            # None: results/unit_importance/<dataset>/, under scratch/ unless update_results

# %%
import numpy as np

from masklab import data, paths
from masklab.experiments import unit_importance as steps

results_dir = paths.output_dirs("unit_importance", dataset, update_results, results_dir).results

splits = data.load_splits(dataset, data_dir)
seed_list = seeds
fractions = np.round(np.linspace(0.0, 1.0, n_fractions), 4)

# %% [markdown]
# ## Morcos et al.: memorizing networks and single directions

# %%
curves, units_mlp, networks_mlp = steps.memorization_experiment(
    splits, randomized=randomized, seeds=seed_list, hidden_units=hidden_units,
    max_epochs=max_epochs, target_accuracy=target_accuracy, batch_size=batch_size, learning_rate=learning_rate,
    fractions=fractions, repeats=repeats)
networks_mlp.round(4)

# %%
curves.groupby(["randomized", "fraction"])["accuracy"].mean().unstack(0).round(3)

# %% [markdown]
# ## Zhou et al. and Bau et al.: single units of seed 004's CNN

# %%
units_cnn, targeted, networks_cnn = steps.cnn_experiment(
    splits, seeds=seed_list, layers=cnn_layers, epochs=cnn_epochs, batch_size=batch_size,
    learning_rate=learning_rate, top_fraction=top_fraction)
networks_cnn.round(4)

# %%
units_cnn.groupby("layer")[["accuracy_drop", "max_class_drop", "selectivity"]].describe().round(3).T

# %%
targeted.groupby("layer")[["target_drop", "rest_drop"]].mean().round(3)

# %% [markdown]
# ## Verdicts (each with the rule that decides it) and the numbers behind them

# %%
summary = steps.summarize(networks_mlp, units_mlp, units_cnn, targeted)
{name: ("holds" if v["holds_here"] else "does not hold") + " -- " + v["rule"] for name, v in summary["verdicts"].items()}

# %%
params = dict(randomized=randomized, seeds=seeds, hidden_units=hidden_units, max_epochs=max_epochs,
              target_accuracy=target_accuracy, batch_size=batch_size, learning_rate=learning_rate,
              n_fractions=n_fractions, repeats=repeats, cnn_layers=cnn_layers, cnn_epochs=cnn_epochs,
              top_fraction=top_fraction)
written = steps.save_unit_importance(curves, units_mlp, networks_mlp, units_cnn, targeted, networks_cnn, summary,
                                     params, splits, dataset, results_dir)
{k: v for k, v in summary.items() if k != "verdicts"}

# %% [markdown]
# ## Figures (`masklab.plots.ablation_by_randomization`, `selectivity_vs_importance`, `class_drop_heatmap`, `class_targeted_ablation`)

# %%
from IPython.display import Image, display

for key in ("curves_figure", "selectivity_figure", "heatmap_figure", "targeted_figure"):
    display(Image(filename=str(written[key])))

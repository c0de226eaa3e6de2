# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 31 · Fixed sparse connectivity on images: local receptive fields
#
# `SparseDense` on the image data: the 784 -> 600 hidden layer of the baseline MLP, but each hidden unit sees only one k x k patch of the image (positions drawn from `seed`). For each k: the local patches, and a control with the same number of connections per unit drawn at random pixels. The plain dense layer is the reference. Epochs are chosen on val; test only scores.

# %% tags=["parameters"]
dataset = "mnist_5k"     # params.yaml: datasets
hidden_units = 600       # sparse_connectivity.hidden_units
patches = [3, 5, 7, 9, 13, 19]  # sparse_connectivity.patches: k of the k x k receptive fields
epochs = 10              # sparse_connectivity.epochs
batch_size = 128         # sparse_connectivity.batch_size
learning_rate = 0.001    # sparse_connectivity.learning_rate (Adam)
seed = 0                 # sparse_connectivity.seed: patch positions, random controls, initial weights
update_results = False   # True: write results/ and models/ (dvc repro sets it); False: scratch/
data_dir = None          # None: data/
results_dir = None       # None: results/sparse_connectivity/<dataset>/, under scratch/ unless update_results

# %%
from masklab import data, paths
from masklab.experiments import sparse

results_dir = paths.output_dirs("sparse_connectivity", dataset, update_results, results_dir).results

# %%
splits = data.load_splits(dataset, data_dir)
splits.summary()

# %% [markdown]
# ## Train one model per connectivity (same seed, same schedule)

# %%
table, trained = sparse.receptive_field_sweep(splits, patches=patches,
                                              hidden_units=hidden_units, epochs=epochs, batch_size=batch_size,
                                              learning_rate=learning_rate, seed=seed)
table

# %% [markdown]
# ## The check: non-zero effective weights off the mask after training (must be 0)

# %%
print("off-mask non-zero effective weights after training:", int(table["off_mask_nonzero_weights"].sum()))

# %%
params = dict(hidden_units=hidden_units, patches=patches, epochs=epochs, batch_size=batch_size,
              learning_rate=learning_rate, seed=seed)
metrics = sparse.receptive_field_metrics(table, splits, params)
written = sparse.save_receptive_fields(table, trained, metrics, splits, results_dir)
written

# %% [markdown]
# ## Figures (`masklab.plots.accuracy_vs_density`, `masklab.plots.receptive_fields`)

# %%
from IPython.display import Image, display
display(*[Image(filename=str(written[key])) for key in ("figure", "fields") if key in written])

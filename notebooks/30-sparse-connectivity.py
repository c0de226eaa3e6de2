# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 30 · Fixed sparse connectivity: seed 003's 9 180 genes -> 230 pathways
#
# The seed: 9 180 inputs, 230 hidden units and a 0/1 matrix saying which input may feed which unit; connections that are absent must never appear during training. `masklab.layers.SparseDense(units, connectivity)` guarantees it: its effective kernel is exactly 0 off the mask, and so is the gradient there.
#
# The data here are **synthetic** (there is no public copy of the seed's biological data): genes are grouped into overlapping pathways (about 2 % of all gene-pathway pairs), and the label depends on a few *known* causal pathways. Three models with the same head: SparseDense on the true memberships, SparseDense on shuffled memberships of the same sizes, and a plain Dense layer. Epochs are chosen on val; test is used only to score.

# %% tags=["parameters"]
n_genes = 9180           # sparse_pathways.n_genes (seed 003)
n_pathways = 230         # sparse_pathways.n_pathways (seed 003)
density = 0.02           # sparse_pathways.density: typical fraction of genes per pathway
n_causal = 4             # sparse_pathways.n_causal: pathways the label depends on
loading = 0.5            # sparse_pathways.loading: co-expression strength within a pathway
label_noise = 0.5        # sparse_pathways.label_noise: label noise std relative to the signal
n_train = 3000           # sparse_pathways.n_train
n_val = 500              # sparse_pathways.n_val
n_test = 1000            # sparse_pathways.n_test
activation = "tanh"      # sparse_pathways.activation of the hidden layer
l2 = 0.01                # sparse_pathways.l2 on every model's hidden kernel
epochs = 20              # sparse_pathways.epochs
batch_size = 128         # sparse_pathways.batch_size
learning_rate = 0.001    # sparse_pathways.learning_rate (Adam)
seed = 0                 # sparse_pathways.seed: data, memberships, initial weights
update_results = False   # True: write results/ and models/ (dvc repro sets it); False: scratch/
results_dir = None       # None: results/sparse_connectivity/pathways/, under scratch/ unless update_results

# %%
from masklab import paths
from masklab.experiments import sparse

results_dir = paths.output_dirs("sparse_connectivity", "pathways", update_results, results_dir).results

# %%
problem = sparse.pathway_problem(n_genes=n_genes, n_pathways=n_pathways, density=density, n_causal=n_causal,
                                 loading=loading, label_noise=label_noise, n_train=n_train, n_val=n_val,
                                 n_test=n_test, seed=seed)
problem.summary()

# %% [markdown]
# ## Train the three models (epoch chosen on val)

# %%
results = sparse.train_pathway_models(problem, activation=activation, l2=l2, epochs=epochs, batch_size=batch_size,
                                      learning_rate=learning_rate, seed=seed)
table = sparse.pathway_model_table(results, problem)
table

# %% [markdown]
# ## The check: non-zero effective weights off the mask after training
#
# Must be 0 for both SparseDense models (the Dense model has no mask and reports 0 by definition).

# %%
print("off-mask non-zero effective weights after training:", int(table["off_mask_nonzero_weights"].sum()))

# %% [markdown]
# ## Does the model learn through the allowed connections?
#
# Input gradients: genes in no pathway have no path to the output of a SparseDense model, so their gradient is exactly 0. Knock-out: switching off one pathway unit at a time (`masklab.ablation.predict_with_masks`) should hurt most for the causal pathways.

# %%
saliency = sparse.input_saliency(results, problem)
knockout = sparse.unit_knockout(results["true pathways"].model, problem)
saliency.pivot(index="genes", columns="model", values="mean_abs_gradient")

# %%
knockout.nlargest(2 * n_causal, "accuracy_drop")

# %%
params = dict(n_genes=n_genes, n_pathways=n_pathways, density=density, n_causal=n_causal, loading=loading,
              label_noise=label_noise, n_train=n_train, n_val=n_val, n_test=n_test, activation=activation, l2=l2,
              epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
metrics = sparse.pathway_metrics(table, knockout, saliency, problem, params)
written = sparse.save_pathways(table, knockout, saliency, metrics, results_dir)
written

# %% [markdown]
# ## Figure (`masklab.plots.pathway_task`)

# %%
from IPython.display import Image
Image(filename=str(written["figure"]))

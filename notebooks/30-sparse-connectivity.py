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
fan_scaling = "full"     # sparse_pathways.fan_scaling of the SparseDense models' initial weights (SparseDense)
epochs = 20              # sparse_pathways.epochs
batch_size = 128         # sparse_pathways.batch_size
learning_rate = 0.001    # sparse_pathways.learning_rate (Adam)
seed = 0                 # sparse_pathways.seed: data, memberships, initial weights
hierarchy_n_genes = 2000               # sparse_pathways.hierarchy_n_genes: multi-level network (P-NET style)
hierarchy_levels = [100, 20, 5]        # sparse_pathways.hierarchy_levels: units per level (pathways first)
hierarchy_density = 0.02               # sparse_pathways.hierarchy_density: genes per pathway / all genes
hierarchy_loading = 1.0                # sparse_pathways.hierarchy_loading
hierarchy_label_noise = 0.3            # sparse_pathways.hierarchy_label_noise
hierarchy_n_train = 2000               # sparse_pathways.hierarchy_n_train
hierarchy_n_val = 500                  # sparse_pathways.hierarchy_n_val
hierarchy_n_test = 1000                # sparse_pathways.hierarchy_n_test
hierarchy_epochs = 20                  # sparse_pathways.hierarchy_epochs
hierarchy_seeds = [0, 1, 2]            # sparse_pathways.hierarchy_seeds: one problem and four models per seed
update_results = False   # True: write results/ and models/ (dvc repro sets it); False: scratch/
results_dir = None       # None: results/sparse_connectivity/pathways/, under scratch/ unless update_results
hierarchy_results_dir = None  # None: results/sparse_connectivity/hierarchy/, under scratch/ unless update_results

# %%
from masklab import paths
from masklab.experiments import hierarchy, sparse

results_dir = paths.output_dirs("sparse_connectivity", "pathways", update_results, results_dir).results
hierarchy_results_dir = paths.output_dirs("sparse_connectivity", "hierarchy", update_results,
                                          hierarchy_results_dir).results

# %%
problem = sparse.pathway_problem(n_genes=n_genes, n_pathways=n_pathways, density=density, n_causal=n_causal,
                                 loading=loading, label_noise=label_noise, n_train=n_train, n_val=n_val,
                                 n_test=n_test, seed=seed)
problem.summary()

# %% [markdown]
# ## Train the three models (epoch chosen on val)

# %%
results = sparse.train_pathway_models(problem, activation=activation, l2=l2, epochs=epochs, batch_size=batch_size,
                                      learning_rate=learning_rate, seed=seed, fan_scaling=fan_scaling)
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
              fan_scaling=fan_scaling, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
metrics = sparse.pathway_metrics(table, knockout, saliency, problem, params)
written = sparse.save_pathways(table, knockout, saliency, metrics, results_dir)
written

# %% [markdown]
# ## Figure (`masklab.plots.pathway_task`)

# %%
from IPython.display import Image
Image(filename=str(written["figure"]))

# %% [markdown]
# ## Multi-level pathway networks: genes -> pathways -> parent pathways -> top-level pathways
#
# P-NET, BINN and KPNN stack one sparse layer per level of a pathway hierarchy. `masklab.layers.connectivity_hierarchy(memberships, genes)` turns one child -> parent membership table per level into one connectivity per level, and `masklab.models.sparse_hierarchy_mlp` stacks a `SparseDense` layer on each (`level_1`, `level_2`, ...).
#
# Synthetic again: a random tree of pathways over overlapping gene sets; the label depends on **one** pathway's activity, hence on one parent and one top-level pathway above it (the causal path). For each seed: a fresh problem, the network trained on the true hierarchy, and a **shuffled control** of the same sizes (pathways keep their sizes with random genes; parents keep their number of children, drawn at random). Knock-out switches off one unit at a time, level by level, and measures the rise of the test loss.
#
# The same runs compare three ways to scale the initial weights (`SparseDense(fan_scaling=...)`): the full shape as `Dense` does (the default), each unit's real fan-in, and the flat nnz vector as P-NET's `SparseTF` does. Knock-out and the control use the default.

# %%
hierarchy_tables = hierarchy.run_hierarchy(
    n_genes=hierarchy_n_genes, level_sizes=hierarchy_levels, density=hierarchy_density, loading=hierarchy_loading,
    label_noise=hierarchy_label_noise, n_train=hierarchy_n_train, n_val=hierarchy_n_val, n_test=hierarchy_n_test,
    activation=activation, epochs=hierarchy_epochs, batch_size=batch_size, learning_rate=learning_rate,
    seeds=hierarchy_seeds)
hierarchy_tables["path"]

# %%
hierarchy_params = dict(n_genes=hierarchy_n_genes, level_sizes=hierarchy_levels, density=hierarchy_density,
                        loading=hierarchy_loading, label_noise=hierarchy_label_noise, n_train=hierarchy_n_train,
                        n_val=hierarchy_n_val, n_test=hierarchy_n_test, activation=activation,
                        epochs=hierarchy_epochs, batch_size=batch_size, learning_rate=learning_rate,
                        seeds=hierarchy_seeds)
hierarchy_metrics = hierarchy.hierarchy_metrics(hierarchy_tables, hierarchy_params)
hierarchy_written = hierarchy.save_hierarchy(hierarchy_tables, hierarchy_metrics, hierarchy_results_dir)
hierarchy_metrics["verdicts"]

# %% [markdown]
# ## Figures (`masklab.plots.hierarchy_knockout`, `masklab.plots.fan_scaling`)

# %%
Image(filename=str(hierarchy_written["knockout_figure"]))

# %%
Image(filename=str(hierarchy_written["init_figure"]))

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 41 · Whole-model pruning: dependency groups, criteria, fine-tuning
#
# A small residual CNN (`masklab.models.residual_cnn`: a 3x3 stem and three residual stages of 16 / 32 / 64 channels with BatchNorm) is trained on the dataset, then pruned as a whole by `masklab.surgery.prune`: every dependency group (a stage's residual stream is one group: its shortcut and its blocks' last convs meet at an `Add`) loses the same fraction of its channels, chosen by a criterion. Each pruned model is checked against the masked original and scored on the test split three times: right after pruning, after re-estimating its BatchNorm statistics on the training images (no weight changes), and after a few epochs of fine-tuning (epoch chosen on val).
#
# Criteria that look at activations, and the BatchNorm re-estimation, see training images only; test only scores.

# %% tags=["parameters"]
dataset = "mnist_5k"          # params.yaml: datasets
widths = [16, 32, 64]           # pruning.widths: channels of the three residual stages
epochs = 8                    # pruning.epochs
batch_size = 128              # pruning.batch_size
learning_rate = 0.001         # pruning.learning_rate (Adam)
fractions = [0.0, 0.25, 0.5, 0.75]  # pruning.fractions: share of every group's channels removed
criteria = ["l2", "bn_scale", "activation", "random"]  # pruning.criteria
rank_samples = 1000           # pruning.rank_samples: training images the activation criterion sees
fine_tune_epochs = 1          # pruning.fine_tune_epochs
fine_tune_learning_rate = 0.0005  # pruning.fine_tune_learning_rate
latency_batch = 256           # pruning.latency_batch
seed = 0                      # pruning.seed
update_results = False        # True: write results/ and models/ (dvc repro sets it); False: scratch/
data_dir = None               # None: data/
results_dir = None            # None: results/pruning/<dataset>/, under scratch/ unless update_results

# %%
from masklab import data, paths, surgery
from masklab.experiments import pruning as steps

results_dir = paths.output_dirs("pruning", dataset, update_results, results_dir).results

# %%
splits = data.load_splits(dataset, data_dir)
result = steps.train_model(splits, widths=widths, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, seed=seed)
model = result.model
result.history

# %% [markdown]
# ## The dependency groups of the trained model (pruning half of every group by L2 norm)
#
# One row per group: its producers, channels before / after, and the parameters and multiply-accumulates of the layers it touches. The logits layer's group is blocked: its channels are the model's output.

# %%
example = surgery.prune(model, 0.5, "l2", x=steps.images(splits.train)[:rank_samples])
print(example.summary())
example.report

# %% [markdown]
# ## Accuracy vs multiply-accumulates, by criterion: right after pruning, after re-estimating BatchNorm statistics, after fine-tuning

# %%
fraction_list = fractions
table = steps.prune_sweep(model, splits, fractions=fraction_list, criteria=criteria,
                            rank_samples=rank_samples, fine_tune_epochs=fine_tune_epochs,
                            batch_size=batch_size, learning_rate=fine_tune_learning_rate, seed=seed)
table.pivot_table(index=["criterion", "fraction"], columns="phase", values="test_accuracy").round(4)

# %% [markdown]
# ## Measured latency (compiled inference on one batch)
#
# Written to `latency.csv` and `latency.png` next to the results and not shown here: wall-clock time differs on every run, and an executed notebook must come out the same every time.

# %%
latency = steps.latency_sweep(model, splits, fraction_list, batch=latency_batch)
print(f"measured {len(latency)} fractions")

# %%
params = dict(widths=widths, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
              fractions=fractions, criteria=criteria, rank_samples=rank_samples, fine_tune_epochs=fine_tune_epochs,
              fine_tune_learning_rate=fine_tune_learning_rate, latency_batch=latency_batch, seed=seed)
metrics = steps.pruning_metrics(result, splits, table, example, params)
written = steps.save_pruning(table, latency, example, metrics, dataset, results_dir)
written

# %% [markdown]
# ## Figure (`masklab.plots.pruning_tradeoff`; `masklab.plots.latency_vs_macs` draws `latency.png`)

# %%
from IPython.display import Image
Image(filename=str(written["figure"]))

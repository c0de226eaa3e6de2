# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 51 · NSDropout without the label: does any class-conditional mask help? (seed 002, continued)
#
# Notebook 50 showed that NSDropout's published numbers need the true label at inference; without it the network
# errs on most test images. Seed 002's author wanted to know "where this layer improves over the existing layer and
# where it falls short". Here every variant decides its masks **without the label at inference**, and is compared
# with the dropout family on the same network, the same labelled images and the same seeds
# (`masklab.experiments.nsdropout_variants`):
#
# 1. **presentation run** (seed 002's 500-image demo) under the original protocol and the corrected one;
# 2. **seed 002's MLP** (full batch, as notebook 50): standard, curriculum and targeted dropout; NSDropout routed by
#    the label (label-free inference), by the model's own predicted class, by a k-means cluster of the activations,
#    or one class-free mask (`masklab.layers.nsdropout_routing`);
# 3. **seed 004's CNN**: the same methods on its `(7, 7, 64)` feature maps after the last pooling, one mask per
#    class (or cluster) over the channels, whole channels dropped (standard dropout: `SpatialDropout2D`).
#
# Protocol: epoch chosen on val per (method, inference mode), test scored once, several seeds; paired differences
# against standard dropout with Student-t 95 % intervals.

# %% tags=["parameters"]
dataset = "mnist_5k"          # params.yaml: datasets
seeds = [0, 1, 2]             # nsdropout_variants.seeds: MLP comparison and the presentation run's corrected protocol
cnn_seeds = [0, 1, 2]         # nsdropout_variants.cnn_seeds
methods = ["standard dropout", "curriculum dropout", "targeted dropout", "NSDropout, label routing", "NSDropout, predicted-class routing", "NSDropout, k-means routing", "NSDropout, single class-free mask"]  # nsdropout_variants.methods
cnn_methods = ["standard dropout", "curriculum dropout", "targeted dropout", "NSDropout, label routing", "NSDropout, predicted-class routing", "NSDropout, k-means routing", "NSDropout, single class-free mask"]  # nsdropout_variants.cnn_methods
pool_size = 10000             # nsdropout_variants.pool_size: labelled images (capped at the training split)
mask_fraction = 0.2           # nsdropout_variants.mask_fraction: of the pool -> mask split (NSDropout kinds)
rate = 0.2                    # nsdropout_variants.rate: dropout / NSDropout / curriculum (final) rate
curriculum_gamma = 0.02       # nsdropout_variants.curriculum_gamma: ramp speed per step (CurriculumDropout)
targeted_fraction = 0.5       # nsdropout_variants.targeted_fraction: lowest-magnitude share of units targeted
targeted_rate = 0.4           # nsdropout_variants.targeted_rate: drop probability of a targeted unit
cluster_refit_every = 10      # nsdropout_variants.cluster_refit_every: epochs between k-means refits
mlp_epochs = 500              # nsdropout_variants.mlp_epochs: full-batch steps (as notebook 50)
mlp_learning_rate = 0.005     # nsdropout_variants.mlp_learning_rate: Adam, lr / (1 + decay * step)
mlp_decay = 5e-7              # nsdropout_variants.mlp_decay
mlp_l2 = 0.0005               # nsdropout_variants.mlp_l2: first layer's kernel and bias
mlp_hidden_units = [128, 128, 128]  # nsdropout_variants.mlp_hidden_units
cnn_epochs = 12               # nsdropout_variants.cnn_epochs
cnn_batch_size = 128          # nsdropout_variants.cnn_batch_size
cnn_learning_rate = 0.001     # nsdropout_variants.cnn_learning_rate: Adam
presentation = {"pool_size": 500, "mask_fraction": 0.2, "shuffle_seed": 22, "hidden_units": [256, 256, 256], "rate": 0.4, "learning_rate": 0.002, "decay": 5e-7, "l2": 0.0005, "epochs": 18}  # nsdropout_variants.presentation
update_results = False        # True: write results/ (dvc repro sets it); False: scratch/
data_dir = None               # None: data/
results_dir = None            # None: results/nsdropout/<dataset>/, under scratch/ unless update_results

# %%
from masklab import data, paths
from masklab.experiments import nsdropout as protocols
from masklab.experiments import nsdropout_variants as steps

results_dir = paths.output_dirs("nsdropout", dataset, update_results, results_dir).results
splits = data.load_splits(dataset, data_dir)

# %% [markdown]
# ## 1 · The presentation run: seed 002's demo (400 training images), with and without the label's mask

# %%
show = presentation
presentation_fit = dict(num_classes=splits.num_classes, epochs=show["epochs"], learning_rate=show["learning_rate"],
                        decay=show["decay"], l2=show["l2"], rate=show["rate"], hidden_units=tuple(show["hidden_units"]))
presentation_result = steps.run_presentation(splits, pool_size=show["pool_size"], mask_fraction=show["mask_fraction"],
                                             shuffle_seed=show["shuffle_seed"], seeds=seeds, fit=presentation_fit)
print(steps.presentation_table(presentation_result, dataset))

# %% [markdown]
# ## 2 · Seed 002's MLP: leak-free NSDropout variants vs the dropout family

# %%
parts = protocols.corrected_splits(splits, pool_size=pool_size, mask_fraction=mask_fraction, seed=seeds[0])
family = dict(rate=rate, curriculum_gamma=curriculum_gamma, targeted_fraction=targeted_fraction,
              targeted_rate=targeted_rate, cluster_refit_every=cluster_refit_every)
mlp_fit = dict(family, epochs=mlp_epochs, learning_rate=mlp_learning_rate, decay=mlp_decay, l2=mlp_l2,
               hidden_units=tuple(mlp_hidden_units), batch_size=None)
mlp_scores = steps.run_comparison("mlp", parts, num_classes=splits.num_classes, methods=methods, seeds=seeds,
                                  fit=mlp_fit)
print(steps.comparison_table(steps.paired_differences(mlp_scores), "seed 002's MLP"))

# %% [markdown]
# ## 3 · Seed 004's CNN: the same methods, one mask per class (or cluster) over the 64 channels

# %%
cnn_fit = dict(family, epochs=cnn_epochs, learning_rate=cnn_learning_rate, batch_size=cnn_batch_size)
cnn_scores = steps.run_comparison("cnn", parts, num_classes=splits.num_classes, methods=cnn_methods, seeds=cnn_seeds,
                                  fit=cnn_fit)
print(steps.comparison_table(steps.paired_differences(cnn_scores), "seed 004's CNN"))

# %% [markdown]
# ## 4 · Saving: tables, per-seed scores, one figure (`masklab.plots.variant_comparison`)

# %%
params = dict(seeds=seeds, cnn_seeds=cnn_seeds, methods=methods, cnn_methods=cnn_methods, pool_size=pool_size,
              mask_fraction=mask_fraction, mlp=mlp_fit, cnn=cnn_fit, presentation=presentation)
written = steps.save_variants({"mlp": mlp_scores, "cnn": cnn_scores}, presentation_result,
                              {"splits": protocols.split_summary(parts), "params": params, "data": splits.summary()},
                              dataset, results_dir)
print(written["comparison"].read_text())

# %%
from IPython.display import Image, display
display(Image(filename=str(written["figure"])))

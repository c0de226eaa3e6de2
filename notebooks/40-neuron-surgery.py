# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 40 · Neuron surgery: physically removing units (seed 004)
#
# The seed: in the classic federated-learning CNN (conv 5x5 x32 + pool, conv 5x5 x64 + pool, flatten, dense 512 ReLU, dense 10), remove 100 of the 512 dense units, giving a real `Dense(412)` with the matching rows of the next kernel gone, not just multiplied by zero. `masklab.surgery.remove_units` builds that new model (the original is untouched) and `verify_equivalence` checks it computes exactly what the original computes with those units masked to 0.
#
# Units are chosen from the weights or at random, never from the test split; test only scores.

# %% tags=["parameters"]
dataset = "mnist_5k"     # params.yaml: datasets
epochs = 5               # neuron_surgery.epochs
batch_size = 128         # neuron_surgery.batch_size
learning_rate = 0.001    # neuron_surgery.learning_rate (Adam)
layer = "dense_512"      # neuron_surgery.layer
remove = 100             # neuron_surgery.remove: the seed's 100 of 512
counts = [0, 50, 100, 200, 300, 400, 450, 500, 510]  # neuron_surgery.counts: units removed on the accuracy curve
repeats = 3              # neuron_surgery.repeats: random draws per count
conv_layer = "conv_2"    # neuron_surgery.conv_layer: filters removed in the conv part
conv_fraction = 0.5      # neuron_surgery.conv_fraction
check_images = 256       # neuron_surgery.check_images: test images in the equivalence checks
latency_batch = 256      # neuron_surgery.latency_batch
seed = 0                 # neuron_surgery.seed
update_results = False   # True: write results/ and models/ (dvc repro sets it); False: scratch/
data_dir = None          # None: data/
results_dir = None       # None: results/neuron_surgery/<dataset>/, under scratch/ unless update_results

# %%
from masklab import data, paths, surgery
from masklab.experiments import surgery as steps

results_dir = paths.output_dirs("neuron_surgery", dataset, update_results, results_dir).results

# %%
splits = data.load_splits(dataset, data_dir)
result = steps.train_cnn(splits, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
model = result.model
result.history

# %% [markdown]
# ## Remove the seed's 100 units: by an explicit index list, and by smallest weight norm

# %%
by_index = steps.choose_units(model, layer, remove, "random", seed)        # the seed's list_indices
by_norm = steps.choose_units(model, layer, remove, "weight_norm", seed)
pruned = surgery.remove_units(model, layer, by_index)
shapes = steps.shapes_before_after(model, pruned)
shapes

# %% [markdown]
# ## The guarantee: removed == masked (max |difference| of the softmax outputs)

# %%
x_check = steps.images(splits.test)[:check_images]
conv_filters = steps.choose_units(model, conv_layer, int(conv_fraction * model.get_layer(conv_layer).filters),
                                  "weight_norm", seed)
checks = {
    "index_list": surgery.verify_equivalence(model, pruned, layer, by_index, x_check),
    "weight_norm": surgery.verify_equivalence(model, surgery.remove_units(model, layer, by_norm), layer, by_norm,
                                              x_check),
    "conv_filters": surgery.verify_equivalence(model, surgery.remove_units(model, conv_layer, conv_filters),
                                               conv_layer, conv_filters, x_check),
    "parameters_before": int(model.count_params()), "parameters_after": int(pruned.count_params()),
    "dense_units_after": int(pruned.get_layer(layer).units),
    "next_kernel_shape_after": list(pruned.get_layer("output").kernel.shape),
}
checks

# %% [markdown]
# ## Test accuracy vs units removed (smallest weight norm first vs random)

# %%
curve = steps.accuracy_vs_removed(model, splits, layer, counts, repeats=repeats,
                                  seed=seed)
curve.groupby(["how", "removed"])["accuracy"].mean().unstack(0).round(4)

# %% [markdown]
# ## Inference latency: masked (full size) vs removed
#
# Written to `latency.json` next to the results and not shown here: wall-clock time differs on every run, and an executed notebook must come out the same every time.

# %%
x_latency = steps.images(splits.train)[:latency_batch]
conv_pruned = surgery.remove_units(model, conv_layer, conv_filters)
latency = {"masked_full_model": steps.latency_ms(model, x_latency),
           "dense_units_removed": steps.latency_ms(pruned, x_latency),
           "conv_filters_removed": steps.latency_ms(conv_pruned, x_latency), "batch": latency_batch}
print(f"measured {len(latency) - 1} models")

# %%
params = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, layer=layer, remove=remove,
              counts=counts, repeats=repeats, conv_layer=conv_layer, conv_fraction=conv_fraction,
              check_images=check_images, latency_batch=latency_batch, seed=seed)
metrics = steps.surgery_metrics(result, splits, checks, curve, params)
written = steps.save_surgery(shapes, curve, metrics, latency, dataset, results_dir)
written

# %% [markdown]
# ## Figure (`masklab.plots.accuracy_vs_removed`)

# %%
from IPython.display import Image
Image(filename=str(written["figure"]))

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 20 · Per-input neuron masks (seeds 000/001)
#
# The seeds ask: for each input image, switch off a chosen subset of the 600 hidden units of the MNIST MLP so they pass nothing to the output layer, and see what the prediction becomes. `masklab.layers.NeuronMask` does it without the Lambda-and-global-variable hack; `masklab.ablation` does it for many masks at once.
#
# Masks are KEEP masks (1 keeps a unit, 0 switches it off), applied after the ReLU. The model is the stage-10 baseline; unit rankings by activation use the **train** split, accuracy is measured on **test**.

# %% tags=["parameters"]
dataset = "mnist_5k"     # params.yaml: datasets
layer = "hidden_1"       # neuron_masks.layer: the baseline's 600-unit ReLU layer
example_index = 0        # neuron_masks.example_index: which test image to show
n_fractions = 20         # neuron_masks.n_fractions: points on the accuracy-drop curve
max_fraction = 0.95      # neuron_masks.max_fraction
strategies = ["random", "lowest_activation", "highest_activation", "smallest_weight_norm"]  # neuron_masks.strategies
repeats = 5              # neuron_masks.repeats (random masks)
check_images = 256       # neuron_masks.check_images: per-sample masks checked against NumPy
seed = 0                 # neuron_masks.seed
update_results = False   # True: write results/ and models/ (dvc repro sets it); False: scratch/
data_dir = None          # None: data/
models_dir = None        # None: models/baseline/ (the pipeline's model; only read)
results_dir = None       # None: results/neuron_masks/<dataset>/, under scratch/ unless update_results

# %%
from masklab import data, paths
from masklab.experiments import masks

results_dir = paths.output_dirs("neuron_masks", dataset, update_results, results_dir).results

# %%
splits = data.load_splits(dataset, data_dir)
model = masks.load_baseline(dataset, models_dir)
model.summary()

# %% [markdown]
# ## The seeds' question: one test image, several masks

# %%
image = splits.test.x[example_index]
named_masks = masks.example_masks(model, layer, data.to_inputs(image[None])[0], data.to_inputs(splits.train.x), seed)
examples = masks.example_predictions(model, layer, data.to_inputs(image[None])[0], named_masks, splits.class_names)
examples.pivot(index='mask', columns='class', values='probability').round(3)

# %% [markdown]
# ## Accuracy drop: test accuracy vs fraction of hidden units switched off

# %%
table = masks.accuracy_drop(model, layer, splits, n_fractions=n_fractions, max_fraction=max_fraction,
                            strategies=strategies, repeats=repeats, seed=seed)
table.groupby(['strategy', 'fraction'])['accuracy'].mean().unstack(0).round(3)

# %% [markdown]
# ## Different images, different masks, one batch — checked against a NumPy forward pass

# %%
check = masks.per_sample_mask_check(model, layer, splits, n=check_images, seed=seed)
check

# %%
params = dict(layer=layer, example_index=example_index, n_fractions=n_fractions, max_fraction=max_fraction,
              strategies=strategies, repeats=repeats, check_images=check_images, seed=seed)
metrics = masks.mask_metrics(table, check, splits, params)
written = masks.save_masks(table, examples, image, metrics, dataset, results_dir,
                           true_label=int(splits.test.y[example_index]), class_names=splits.class_names)
written

# %% [markdown]
# ## Figures (`masklab.plots.accuracy_drop`, `masklab.plots.mask_examples`)

# %%
from IPython.display import Image, display
display(Image(filename=str(written['accuracy_drop'])), Image(filename=str(written['mask_examples'])))

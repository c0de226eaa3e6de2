# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (masklab)
#     language: python
#     name: masklab
# ---

# %% [markdown]
# # 10 · Baseline: the seeds' 784-600-10 MLP
#
# Seeds 000/001 train a one-hidden-layer MLP on MNIST (600 ReLU units, softmax, Adam, batch 128). Later notebooks switch its hidden units off; this one trains it with the common loop (`masklab.training.train`), picks the epoch on **val** only, and scores **test** once.
#
# Run by `dvc repro baseline@<dataset>`; parameters come from `params.yaml: baseline`.

# %% tags=["parameters"]
dataset = "mnist_5k"     # params.yaml: datasets
hidden_units = 600       # params.yaml: baseline.hidden_units
epochs = 10              # baseline.epochs
batch_size = 128         # baseline.batch_size
learning_rate = 0.001    # baseline.learning_rate
seed = 0                 # baseline.seed
verbose = "epoch"        # "epoch": one line per epoch, no timings; keras: 1 bar, 2 line + timings
update_results = False   # True: write results/ and models/ (dvc repro sets it); False: scratch/
data_dir = None          # None: data/ (written by the prepare stage)
results_dir = None       # None: results/baseline/<dataset>/, under scratch/ unless update_results
models_dir = None        # None: models/baseline/, under scratch/ unless update_results

# %%
from masklab import data, paths
from masklab.experiments import baseline

results_dir, models_dir = paths.output_dirs("baseline", dataset, update_results, results_dir, models_dir)

# %% [markdown]
# ## Data: the splits written by the `prepare` stage

# %%
splits = data.load_splits(dataset, data_dir)
splits.summary()

# %% [markdown]
# ## Train; the epoch is chosen on `val`
# DVCLive logs every epoch to `epochs/` next to the results (what `dvc plots show` draws as the learning curve).

# %%
result = baseline.train_baseline(splits, hidden_units=hidden_units, epochs=epochs, batch_size=batch_size,
                                 learning_rate=learning_rate, seed=seed, verbose=verbose,
                                 live_dir=results_dir / "epochs")
result.history

# %% [markdown]
# ## Score `test` once, with the chosen epoch's weights

# %%
test_scores = baseline.score_on_test(result, splits)
params = dict(hidden_units=hidden_units, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
metrics = baseline.baseline_metrics(result, splits, test_scores, params)
written = baseline.save_baseline(result, metrics, dataset, results_dir=results_dir, models_dir=models_dir)
{k: metrics[k] for k in ('test_accuracy', 'val_accuracy', 'best_epoch')}

# %% [markdown]
# ## Learning curve (`masklab.plots.learning_curve` → `results/baseline/<dataset>/learning_curve.png`)

# %%
from IPython.display import Image
Image(filename=str(written['learning_curve']))

"""Every notebook executed by papermill with tiny parameters; metrics read back from the files it wrote. The
notebooks are jupytext percent-format scripts (notebooks/NN-topic.py) run in the project's kernel (conftest.py)."""

import json
import shutil

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from jupytext.config import load_jupytext_config

from masklab import data, kernel, paths, pipeline

# The notebooks' kernels run on TensorFlow, the backend of the pipeline's results, whichever backend this process
# has (kernel_on_tensorflow below); this process only reads what they wrote. The tests of results are marked
# tensorflow_only (run in make test's TensorFlow process), those of the workflow (papermill, scratch/, JupyterLab,
# normalization) backend_independent: make test runs them in its JAX process, which has less to do.
on_tensorflow = pytest.mark.tensorflow_only
workflow = pytest.mark.backend_independent


@pytest.fixture(autouse=True)
def kernel_on_tensorflow(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.delenv("XLA_FLAGS", raising=False)

NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("*.py"))


@workflow
def test_the_stage_notebooks_are_the_scripts_and_their_paired_ipynb_files_stay_local():
    assert {p.name for p in NOTEBOOKS} == set(pipeline.NOTEBOOKS.values())
    ignored = (paths.PROJ_ROOT / ".gitignore").read_text().splitlines()
    assert "/notebooks/*.ipynb" in ignored and "/scratch/" in ignored


@workflow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_thin_without_outputs(notebook):
    nb = pipeline.read_notebook(notebook)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code_cells[0].metadata.get("tags", []), "first code cell must be the parameters cell"
    assert all(not c.outputs and c.execution_count is None for c in code_cells), "commit notebooks without outputs"
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code_cells for line in c.source.splitlines()), \
        "reusable code belongs in src/masklab, not in a notebook"
    assert nb.metadata.kernelspec == {"name": kernel.KERNEL_NAME, "display_name": kernel.DISPLAY_NAME,
                                      "language": "python"}
    # interactive runs write scratch/; run-notebook (dvc repro) sets update_results=True
    assert "update_results = False " in code_cells[0].source


@workflow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_a_jupytext_round_trip_gives_the_same_bytes(notebook):
    """Reading the script and writing it back with the project's jupytext settings (what saving in JupyterLab does
    to the .py) changes nothing: no version, cell ids or other metadata that a save would rewrite."""
    config = load_jupytext_config(str(notebook))
    assert config is not None and config.formats == ["ipynb,py:percent"], "notebooks/jupytext.toml pairs them"
    text = notebook.read_text()
    assert jupytext.writes(jupytext.read(notebook), fmt="py:percent", config=config) == text
    header = text[:text.index("\n# %%")]
    assert "jupytext" not in header and "language_info" not in header


@pytest.fixture(scope="module")
def prepared_mnist_5k(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    splits = data.make_splits(data.load("mnist_5k"), seed=0, val_size=500, test_size=1000)
    data.save_splits(splits, folder / "mnist_5k.npz")
    return folder, splits


def run_notebook(name, out_dir, **parameters):
    import papermill

    papermill.execute_notebook(pipeline.read_notebook(paths.NOTEBOOKS_DIR / name),
                               str(out_dir / f"executed-{name.removesuffix('.py')}.ipynb"),
                               kernel_name=kernel.KERNEL_NAME, progress_bar=False, parameters=parameters)


@pytest.fixture(scope="module")
def tiny_baseline(prepared_mnist_5k, tmp_path_factory):
    """Notebook 10 with tiny parameters; later notebooks reuse its model as the pipeline does."""
    data_dir, _ = prepared_mnist_5k
    tmp_path = tmp_path_factory.mktemp("baseline")
    run_notebook("10-baseline.py", tmp_path, dataset="mnist_5k", hidden_units=32, epochs=2, batch_size=128,
                 seed=0, verbose=0, data_dir=str(data_dir), results_dir=str(tmp_path / "results"),
                 models_dir=str(tmp_path / "models"))
    return tmp_path


@on_tensorflow
@pytest.mark.slow
def test_baseline_notebook_runs_and_writes_its_results(prepared_mnist_5k, tiny_baseline):
    _, splits = prepared_mnist_5k
    tmp_path = tiny_baseline
    metrics = json.loads((tmp_path / "results" / "results.json").read_text())
    assert metrics["test_accuracy"] > 0.6  # 32 hidden units, 2 epochs on 3 500 digits: far above chance (0.1)
    assert metrics["best_epoch"] in (1, 2) and metrics["selected_on"] == "val_accuracy"
    assert metrics["data"]["fingerprints"] == splits.summary()["fingerprints"]
    history = np.genfromtxt(tmp_path / "results" / "history.csv", delimiter=",", names=True)
    assert len(history) == 2
    assert metrics["val_accuracy"] == pytest.approx(history["val_accuracy"][metrics["best_epoch"] - 1])
    assert (tmp_path / "results" / "learning_curve.png").stat().st_size > 10_000
    assert (tmp_path / "models" / "mnist_5k.keras").exists()
    headline = json.loads((tmp_path / "results" / "metrics.json").read_text())  # what `dvc metrics show` reads
    assert headline == {k: metrics[k] for k in ("test_accuracy", "test_loss", "val_accuracy", "train_accuracy",
                                                "best_epoch")}
    logged = np.genfromtxt(tmp_path / "results" / "epochs" / "plots" / "metrics" / "eval" / "accuracy.tsv",
                           delimiter="\t", names=True)  # DVCLive's per-epoch log, drawn by `dvc plots show`
    np.testing.assert_array_equal(logged["step"], [1, 2])
    np.testing.assert_allclose(logged["accuracy"], history["val_accuracy"], rtol=1e-6)


@on_tensorflow
@pytest.mark.slow
def test_neuron_masks_notebook_runs_on_the_baseline_model(prepared_mnist_5k, tiny_baseline, tmp_path):
    data_dir, splits = prepared_mnist_5k
    run_notebook("20-neuron-masks.py", tmp_path, dataset="mnist_5k", n_fractions=4, max_fraction=0.9,
                 repeats=2, check_images=64, seed=0, data_dir=str(data_dir),
                 models_dir=str(tiny_baseline / "models"), results_dir=str(tmp_path / "results"))
    metrics = json.loads((tmp_path / "results" / "results.json").read_text())
    baseline = json.loads((tiny_baseline / "results" / "results.json").read_text())
    # nothing switched off == the baseline's own test accuracy; the per-sample batch agrees with NumPy
    assert metrics["test_accuracy_unmasked"] == pytest.approx(baseline["test_accuracy"], abs=1e-6)
    assert metrics["per_sample_check"]["max_abs_diff"] < 1e-5
    assert set(metrics["test_accuracy_by_strategy"]) == {"random", "lowest_activation", "highest_activation",
                                                         "smallest_weight_norm"}
    table = np.genfromtxt(tmp_path / "results" / "ablation.csv", delimiter=",", names=True, dtype=None,
                          encoding="utf-8")
    assert len(table) == 4 * (2 + 3)
    for figure in ("accuracy_drop.png", "mask_examples.png"):
        assert (tmp_path / "results" / figure).stat().st_size > 10_000


@on_tensorflow
@pytest.mark.slow
def test_unit_importance_notebook_checks_both_papers_on_tiny_networks(prepared_mnist_5k, tmp_path):
    data_dir, splits = prepared_mnist_5k
    run_notebook("21-unit-importance.py", tmp_path, dataset="mnist_5k", randomized=[0.0, 1.0], seeds=[0, 1],
                 hidden_units=32, max_epochs=2, n_fractions=3, repeats=2, cnn_layers=["conv_2"], cnn_epochs=1,
                 top_fraction=0.05, data_dir=str(data_dir), results_dir=str(tmp_path / "results"))
    out = tmp_path / "results"
    metrics = json.loads((out / "results.json").read_text())
    assert set(metrics["verdicts"]) == {"morcos_memorizing_networks_rely_more_on_single_directions",
                                        "morcos_selectivity_poor_predictor_of_importance",
                                        "zhou_single_units_barely_move_overall_accuracy_but_hurt_classes",
                                        "zhou_selectivity_predicts_class_drops",
                                        "bau_class_targeted_ablation_hurts_that_class"}
    assert all(isinstance(v["holds_here"], bool) for v in metrics["verdicts"].values())
    curves = pd.read_csv(out / "ablation_by_randomization.csv")
    assert set(curves.randomized) == {0.0, 1.0} and set(curves.seed) == {0, 1}
    # nothing ablated: the accuracy of each network on its own training labels, recorded when it was trained
    intact = curves[curves.fraction == 0].groupby(["randomized", "seed"]).accuracy.first()
    for net in metrics["mlp_networks"]:
        assert intact[(net["randomized"], net["seed"])] == pytest.approx(net["train_accuracy"], abs=1e-6)
    cnn = pd.read_csv(out / "cnn_units.csv")
    assert len(cnn) == 2 * 64 and cnn.selectivity.between(0, 1).all()
    targeted = pd.read_csv(out / "class_targeted.csv")
    assert len(targeted) == 2 * splits.num_classes
    for name in ("ablation_by_randomization", "selectivity_vs_importance", "class_drop_heatmap",
                 "class_targeted_ablation"):
        assert (out / f"{name}.png").stat().st_size > 10_000


@on_tensorflow
@pytest.mark.slow
def test_sparse_pathways_notebook_keeps_absent_connections_at_zero(tmp_path):
    run_notebook("30-sparse-connectivity.py", tmp_path, n_genes=400, n_pathways=20, density=0.05, n_causal=2,
                 n_train=300, n_val=100, n_test=200, epochs=2, seed=0, results_dir=str(tmp_path / "results"),
                 hierarchy_results_dir=str(tmp_path / "hierarchy"), **TINY_HIERARCHY)
    metrics = json.loads((tmp_path / "results" / "results.json").read_text())
    assert metrics["off_mask_nonzero_weights"] == 0
    assert set(metrics["models"]) == {"true pathways", "shuffled pathways", "dense"}
    sparse_models = [m for name, m in metrics["models"].items() if name != "dense"]
    assert all(m["trainable_parameters"] == metrics["problem"]["connections"] + 20 + 2 * 20 + 2
               for m in sparse_models)  # connected weights + hidden bias + the 20 -> 2 head
    # genes in no pathway have no path to a SparseDense model's output: their input gradient is exactly 0
    assert metrics["saliency"]["true pathways"]["genes in no pathway"] == 0.0
    assert metrics["saliency"]["dense"]["genes in no pathway"] > 0.0
    knockout = np.genfromtxt(tmp_path / "results" / "knockout.csv", delimiter=",", names=True, dtype=None,
                             encoding="utf-8")
    assert len(knockout) == 20
    assert (tmp_path / "results" / "pathways.png").stat().st_size > 10_000
    # the multi-level part: one seed, the true hierarchy with three fan scalings and the shuffled control
    hierarchy = json.loads((tmp_path / "hierarchy" / "results.json").read_text())
    assert set(hierarchy["test_accuracy"]) == {"true, fan_scaling=connected", "true, fan_scaling=full",
                                               "true, fan_scaling=nnz", "shuffled, fan_scaling=full"}
    assert len(hierarchy["initial_output_std"]["nnz"]) == 3
    assert hierarchy["initial_output_std"]["nnz"][0] < hierarchy["initial_output_std"]["connected"][0]
    for figure in ("hierarchy_knockout.png", "fan_scaling.png"):
        assert (tmp_path / "hierarchy" / figure).stat().st_size > 10_000


@on_tensorflow
@pytest.mark.slow
def test_sparse_receptive_fields_notebook_sweeps_patch_sizes(prepared_mnist_5k, tmp_path):
    data_dir, splits = prepared_mnist_5k
    run_notebook("31-sparse-receptive-fields.py", tmp_path, dataset="mnist_5k", hidden_units=16,
                 patches=[3, 28], epochs=1, seed=0, data_dir=str(data_dir), results_dir=str(tmp_path / "results"))
    metrics = json.loads((tmp_path / "results" / "results.json").read_text())
    assert metrics["off_mask_nonzero_weights"] == 0
    assert metrics["data"]["fingerprints"] == splits.summary()["fingerprints"]
    local3 = metrics["models"]["local patches k=3"]
    assert local3["density"] == pytest.approx(9 / 784)
    assert local3["trainable_parameters"] == 16 * 9 + 16 + 16 * 10 + 10
    # a 28 x 28 patch on a 28 x 28 image connects everything: the same weights and result as the dense layer
    assert metrics["models"]["local patches k=28"]["density"] == 1.0
    assert metrics["models"]["local patches k=28"]["test_accuracy"] == pytest.approx(
        metrics["models"]["dense"]["test_accuracy"], abs=0.02)
    for figure in ("accuracy_vs_density.png", "receptive_fields.png"):
        assert (tmp_path / "results" / figure).stat().st_size > 5_000


@on_tensorflow
@pytest.mark.slow
def test_neuron_surgery_notebook_removes_units_exactly(prepared_mnist_5k, tmp_path):
    data_dir, splits = prepared_mnist_5k
    run_notebook("40-neuron-surgery.py", tmp_path, dataset="mnist_5k", epochs=1, counts=[0, 100, 500], repeats=1,
                 check_images=32, latency_batch=32, seed=0, data_dir=str(data_dir),
                 results_dir=str(tmp_path / "results"))
    metrics = json.loads((tmp_path / "results" / "results.json").read_text())
    checks = metrics["checks"]
    assert checks["dense_units_after"] == 412 and checks["next_kernel_shape_after"] == [412, 10]
    assert checks["parameters_before"] - checks["parameters_after"] == 100 * (3136 + 1) + 100 * 10
    for key in ("index_list", "weight_norm", "conv_filters"):
        assert checks[key] < 1e-5, key
    assert metrics["accuracy_vs_removed"]["random"]["0"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert metrics["data"]["fingerprints"] == splits.summary()["fingerprints"]
    assert (tmp_path / "results" / "accuracy_vs_removed.png").stat().st_size > 10_000


@on_tensorflow
@pytest.mark.slow
def test_nsdropout_notebook_reproduces_and_corrects(prepared_mnist_5k, tmp_path):
    data_dir, splits = prepared_mnist_5k
    run_notebook("50-nsdropout.py", tmp_path, dataset="mnist_5k", epochs=6, pool_size=800, seeds=[0, 1],
                 curve_every=3, data_dir=str(data_dir), results_dir=str(tmp_path / "results"))
    metrics = json.loads((tmp_path / "results" / "results.json").read_text())
    sizes = {protocol: {name: s["size"] for name, s in parts.items()} for protocol, parts in metrics["splits"].items()}
    assert sizes["original"] == {"train": 640, "mask": 160, "selection": 128, "test": 1000}
    assert sizes["corrected"] == {"train": 640, "mask": 160, "val": 500, "test": 1000}
    assert metrics["data"]["fingerprints"] == splits.summary()["fingerprints"]
    original = metrics["original"]["nsdropout"]
    assert set(original["accuracy"]) == {"none", "predicted", "all", "oracle"}
    assert 1 <= original["best_epoch"] <= 6
    corrected = metrics["corrected"]
    assert [s["seed"] for s in corrected["per_seed"]] == [0, 1]
    for mode in ("none", "predicted", "all"):
        per_seed = [s["nsdropout"][mode]["accuracy"][mode] for s in corrected["per_seed"]]
        assert corrected["nsdropout"][mode]["mean"] == pytest.approx(np.mean(per_seed))
        assert corrected["nsdropout"][mode]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert set(metrics["controls"]) == {"true-label masks (original)", "shuffled-label masks", "random class masks"}
    table = (tmp_path / "results" / "table.md").read_text().splitlines()
    assert len(table) == 8 and table[0] == "| test error % (1 - accuracy) | mnist_5k |"
    curves = np.genfromtxt(tmp_path / "results" / "curves.csv", delimiter=",", names=True, dtype=None,
                           encoding="utf-8")
    assert set(curves["epoch"]) == {1, 3, 6}
    for figure in ("accuracy_curves.png", "mask_dependence.png"):
        assert (tmp_path / "results" / figure).stat().st_size > 10_000


@on_tensorflow
@pytest.mark.slow
def test_leak_free_nsdropout_notebook_compares_every_method_on_both_networks(prepared_mnist_5k, tmp_path):
    data_dir, splits = prepared_mnist_5k
    presentation = {"pool_size": 300, "mask_fraction": 0.2, "shuffle_seed": 22, "hidden_units": [16, 16],
                    "rate": 0.4, "learning_rate": 0.002, "decay": 5e-7, "l2": 0.0005, "epochs": 3}
    run_notebook("51-nsdropout-leak-free.py", tmp_path, dataset="mnist_5k", seeds=[0, 1], cnn_seeds=[0, 1],
                 methods=["standard dropout", "curriculum dropout", "NSDropout, predicted-class routing"],
                 cnn_methods=["standard dropout", "NSDropout, k-means routing"], pool_size=300, mlp_epochs=3,
                 mlp_hidden_units=[16, 16], cnn_epochs=1, presentation=presentation, data_dir=str(data_dir),
                 results_dir=str(tmp_path / "results"))
    out = tmp_path / "results" / "leak_free"
    scores = pd.read_csv(out / "scores.csv")  # method names hold commas: quoted CSV
    rows = set(zip(scores["arch"], scores["method"], scores["mode"], scores["seed"].tolist()))
    expected = {("mlp", "standard dropout", "none"), ("mlp", "curriculum dropout", "none"),
                ("mlp", "NSDropout, predicted-class routing", "none"),
                ("mlp", "NSDropout, predicted-class routing", "routed"), ("cnn", "standard dropout", "none"),
                ("cnn", "NSDropout, k-means routing", "none"), ("cnn", "NSDropout, k-means routing", "routed")}
    assert rows == {(*row, seed) for row in expected for seed in (0, 1)}
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["fingerprints"] == splits.summary()["fingerprints"]
    assert results["splits"]["train"]["size"] == 240 and results["splits"]["mask"]["size"] == 60
    shown = results["presentation"]["original"]
    assert {name: s["size"] for name, s in shown["splits"].items()} == {"train": 240, "mask": 60, "selection": 48,
                                                                        "test": 1000}
    assert set(results["verdict"]) == {"mlp", "cnn"}
    assert len((out / "presentation.md").read_text().splitlines()) == 11
    assert (out / "comparison.png").stat().st_size > 10_000
    assert len(json.loads((out / "metrics.json").read_text())) <= 8


@on_tensorflow
@pytest.mark.slow
def test_pruning_notebook_prunes_exactly_and_fine_tunes(prepared_mnist_5k, tmp_path):
    data_dir, splits = prepared_mnist_5k
    run_notebook("41-pruning.py", tmp_path, dataset="mnist_5k", widths=[4, 8, 8], epochs=1, fractions=[0.0, 0.5],
                 criteria=["l2", "random"], rank_samples=64, fine_tune_epochs=1, latency_batch=16, seed=0,
                 data_dir=str(data_dir), results_dir=str(tmp_path / "results"))
    metrics = json.loads((tmp_path / "results" / "results.json").read_text())
    assert metrics["max_relative_difference"] < 1e-4  # every pruned model equals its masked original
    assert metrics["data"]["fingerprints"] == splits.summary()["fingerprints"]
    table = np.genfromtxt(tmp_path / "results" / "tradeoff.csv", delimiter=",", names=True, dtype=None,
                          encoding="utf-8")
    assert len(table) == 2 * 2 * 3  # criteria x fractions x (pruned, recalibrated, fine-tuned)
    unpruned = table[(table["fraction"] == 0) & (table["phase"] == "pruned")]
    assert np.allclose(unpruned["test_accuracy"], metrics["test_accuracy"])
    half = table[table["fraction"] == 0.5]
    assert (half["macs"] < unpruned["macs"][0]).all() and (half["params"] < unpruned["params"][0]).all()
    report = pd.read_csv(tmp_path / "results" / "report.csv")  # quoted fields: producers are comma-separated
    assert "pruned" in set(report["status"])
    for figure in ("accuracy_vs_macs.png", "latency.png"):
        assert (tmp_path / "results" / figure).stat().st_size > 10_000


@workflow
@pytest.mark.slow
def test_an_executed_notebook_normalized_is_the_same_bytes_on_a_rerun(prepared_mnist_5k, tmp_path):
    """What DVC hashes in results/executed/ must not change between two runs of the same stage."""
    from masklab import records

    data_dir, _ = prepared_mnist_5k
    outputs = []
    for run in ("first", "second"):
        run_notebook("10-baseline.py", tmp_path, dataset="mnist_5k", hidden_units=16, epochs=1, batch_size=128,
                     seed=0, verbose=0, data_dir=str(data_dir), results_dir=str(tmp_path / "results"),
                     models_dir=str(tmp_path / "models"))
        executed = tmp_path / "executed-10-baseline.ipynb"
        outputs.append(records.normalize_executed_notebook(executed, root=tmp_path).read_bytes())
        executed.rename(tmp_path / f"{run}.ipynb")
    assert outputs[0] == outputs[1]
    notebook = json.loads(outputs[0])
    assert "duration" not in notebook["metadata"]["papermill"]
    assert all("execution" not in cell["metadata"] for cell in notebook["cells"])
    shown = json.dumps([cell.get("outputs", []) for cell in notebook["cells"]])
    assert str(tmp_path) not in shown and "I0000" not in shown and "E0000" not in shown
    assert any(cell.get("outputs") for cell in notebook["cells"])  # results stay


TINY_HIERARCHY = dict(hierarchy_n_genes=200, hierarchy_levels=[10, 4, 2], hierarchy_density=0.05,
                      hierarchy_n_train=200, hierarchy_n_val=60, hierarchy_n_test=100, hierarchy_epochs=1,
                      hierarchy_seeds=[0])
TINY_PATHWAYS = dict(n_genes=400, n_pathways=20, density=0.05, n_causal=2, n_train=300, n_val=100, n_test=200,
                     epochs=2, seed=0, **TINY_HIERARCHY)


@workflow
@pytest.mark.slow
def test_run_notebook_writes_results_and_a_run_with_the_notebook_defaults_writes_scratch(tmp_path, monkeypatch):
    """``python -m masklab run-notebook`` (what ``dvc repro`` runs) writes results/; the same notebook run with its
    own defaults, as in JupyterLab, writes scratch/ and leaves results/ alone. MASKLAB_ROOT puts both under
    tmp_path (the kernel inherits it)."""
    params = yaml.safe_load(paths.PARAMS_FILE.read_text())
    params["sparse_pathways"].update(TINY_PATHWAYS)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("MASKLAB_ROOT", str(tmp_path))
    executed = pipeline.run_notebook("sparse_pathways", params_file=tmp_path / "params.yaml",
                                     output=tmp_path / "executed.ipynb")
    results = tmp_path / "results" / "sparse_connectivity" / "pathways"
    written = {path.name: path.read_bytes() for path in results.iterdir()}
    assert written and not (tmp_path / "scratch").exists()
    papermill_metadata = json.loads(executed.read_text())["metadata"]["papermill"]
    assert papermill_metadata["parameters"]["update_results"] is True
    assert papermill_metadata["input_path"] == "notebooks/30-sparse-connectivity.py"

    run_notebook("30-sparse-connectivity.py", tmp_path, **TINY_PATHWAYS)  # update_results, results_dir: defaults
    scratch = tmp_path / "scratch" / "results" / "sparse_connectivity" / "pathways"
    assert {path.name for path in scratch.iterdir()} == set(written)
    assert {path.name: path.read_bytes() for path in results.iterdir()} == written


@workflow
@pytest.mark.slow
def test_opening_running_and_saving_a_notebook_in_jupyterlab_leaves_its_script_unchanged(tmp_path, monkeypatch):
    """What ``make lab`` does with a notebook: jupytext's contents manager opens the .py (paired with an .ipynb by
    notebooks/jupytext.toml), the masklab kernel runs every cell, the contents manager saves what the browser sends
    back. The .py, which DVC hashes, keeps its bytes; the outputs go to the .ipynb, the results to scratch/."""
    import asyncio

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext import build_async_jupytext_contents_manager_class
    from nbclient import NotebookClient

    name = "30-sparse-connectivity.py"
    for file in (name, "jupytext.toml"):
        shutil.copy(paths.NOTEBOOKS_DIR / file, tmp_path / file)
    monkeypatch.setenv("MASKLAB_ROOT", str(tmp_path))
    # the contents manager that jupytext's server extension installs in JupyterLab
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(tmp_path))
    notebook = asyncio.run(manager.get(name))["content"]
    # smaller sizes, set the way papermill sets them (a cell after the parameters cell), removed again before saving
    at = 1 + next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    notebook.cells.insert(at, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in TINY_PATHWAYS.items())))
    NotebookClient(notebook, kernel_name=kernel.KERNEL_NAME, timeout=600).execute()  # outputs, counts, timings
    assert notebook.cells.pop(at).source.startswith("n_genes = 400")
    spec = KernelSpecManager().get_kernel_spec(kernel.KERNEL_NAME)  # JupyterLab writes the running kernel's spec
    notebook.metadata.kernelspec = {"name": kernel.KERNEL_NAME, "display_name": spec.display_name,
                                    "language": spec.language}
    asyncio.run(manager.save({"type": "notebook", "format": "json", "content": json.loads(json.dumps(notebook))}, name))

    assert (tmp_path / name).read_bytes() == (paths.NOTEBOOKS_DIR / name).read_bytes()
    paired = nbformat.read(tmp_path / name.replace(".py", ".ipynb"), as_version=4)
    assert paired.metadata.language_info.name == "python" and paired.cells[-1].outputs
    assert list((tmp_path / "scratch" / "results" / "sparse_connectivity" / "pathways").iterdir())
    assert not (tmp_path / "results").exists()
    # opened again: the inputs come from the .py, the outputs from the paired .ipynb
    reopened = asyncio.run(manager.get(name))["content"]
    assert [c.source for c in reopened.cells] == [c.source for c in pipeline.read_notebook(tmp_path / name).cells]
    assert reopened.cells[-1].outputs

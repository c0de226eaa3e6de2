"""Every notebook executed by papermill with tiny parameters; metrics read back from the files it wrote."""

import json

import nbformat
import numpy as np
import pytest

from masklab import data, paths

NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_thin_without_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code_cells[0].metadata.get("tags", []), "first code cell must be the parameters cell"
    assert all(not c.outputs and c.execution_count is None for c in code_cells), "commit notebooks without outputs"
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code_cells for line in c.source.splitlines()), \
        "reusable code belongs in src/masklab, not in a notebook"


@pytest.fixture(scope="module")
def prepared_mnist_5k(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    splits = data.make_splits(data.load("mnist_5k"), seed=0, val_size=500, test_size=1000)
    data.save_splits(splits, folder / "mnist_5k.npz")
    return folder, splits


@pytest.mark.slow
def test_baseline_notebook_runs_and_writes_its_results(prepared_mnist_5k, tmp_path):
    import papermill

    data_dir, splits = prepared_mnist_5k
    papermill.execute_notebook(
        str(paths.NOTEBOOKS_DIR / "10-baseline.ipynb"), str(tmp_path / "executed.ipynb"), kernel_name="python3",
        progress_bar=False,
        parameters=dict(dataset="mnist_5k", hidden_units=32, epochs=2, batch_size=128, seed=0, verbose=0,
                        data_dir=str(data_dir), results_dir=str(tmp_path / "results"),
                        models_dir=str(tmp_path / "models")),
    )
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.6  # 32 hidden units, 2 epochs on 3 500 digits: far above chance (0.1)
    assert metrics["best_epoch"] in (1, 2) and metrics["selected_on"] == "val_accuracy"
    assert metrics["data"]["fingerprints"] == splits.summary()["fingerprints"]
    history = np.genfromtxt(tmp_path / "results" / "history.csv", delimiter=",", names=True)
    assert len(history) == 2
    assert metrics["val_accuracy"] == pytest.approx(history["val_accuracy"][metrics["best_epoch"] - 1])
    assert (tmp_path / "results" / "learning_curve.png").stat().st_size > 10_000
    assert (tmp_path / "models" / "mnist_5k.keras").exists()

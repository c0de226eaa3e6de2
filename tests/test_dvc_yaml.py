"""dvc.yaml's declarations against what the stages write: every declared plot and metrics file is one that a
stage writes and DVC can draw (data plots name an x and y columns present in their files), and the committed
results match those declarations. Checked on the committed results, so a rename in the code that is not carried
into dvc.yaml fails here instead of rendering an empty plot."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from masklab import paths

pytestmark = pytest.mark.backend_independent  # computes nothing with Keras: runs once (conftest.py)

DVC_YAML = yaml.safe_load((paths.PROJ_ROOT / "dvc.yaml").read_text())
DATA_PLOTS = [(next(iter(p)), next(iter(p.values()))) for p in DVC_YAML["plots"] if isinstance(p, dict)]
IMAGE_PLOTS = [p for p in DVC_YAML["plots"] if isinstance(p, str)]


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


@pytest.mark.parametrize("plot_id, spec", DATA_PLOTS, ids=[p for p, _ in DATA_PLOTS])
def test_data_plot_names_columns_that_exist(plot_id, spec):
    assert {"x", "y", "title", "template", "x_label", "y_label"} <= set(spec), f"{plot_id}: incomplete spec"
    for file, columns in spec["y"].items():
        path = paths.PROJ_ROOT / file
        if not path.exists() and "mnist_5k" not in path.parts:  # the default profile's plots always exist
            pytest.skip(f"{file}: no results for this dataset here")
        table = _read_table(path)
        columns = [columns] if isinstance(columns, str) else columns
        assert spec["x"] in table.columns, f"{file}: no x column {spec['x']!r}; has {list(table.columns)}"
        missing = sorted(set(columns) - set(table.columns))
        assert not missing, f"{file}: declared series {missing} not among {list(table.columns)}"
        assert set(table.columns) - {spec["x"]} <= set(columns), f"{file}: series written but not declared"
        assert table[columns].notna().any().all(), f"{file}: a declared series is empty"


@pytest.mark.parametrize("image", IMAGE_PLOTS)
def test_image_plots_are_committed_pngs(image):
    path = paths.PROJ_ROOT / image
    assert path.suffix == ".png" and path.exists(), image


def test_only_plottable_files_are_declared_as_plots():
    """No table.md, JSON or latency file among the plots (DVC renders JSON/YAML/CSV/TSV and images only)."""
    declared = IMAGE_PLOTS + [f for _, spec in DATA_PLOTS for f in spec["y"]]
    assert all(Path(f).suffix in {".png", ".csv", ".tsv"} for f in declared)
    for stage in DVC_YAML["stages"].values():
        body = stage.get("do", stage)
        assert "plots" not in body, "plots are declared at the top level of dvc.yaml, with x, y and titles"


def test_metrics_files_hold_a_few_scalars():
    """Each metrics.json: what `dvc metrics show` prints in one row per file; the rich results are elsewhere."""
    files = sorted([*paths.RESULTS_DIR.glob("*/*/metrics.json"), *paths.RESULTS_DIR.glob("*/*/leak_free/metrics.json")])
    assert files
    for file in files:
        metrics = json.loads(file.read_text())
        assert 0 < len(metrics) <= 8, f"{file}: {len(metrics)} metrics"
        assert all(isinstance(v, (int, float, bool)) for v in metrics.values()), file
        assert (file.parent / "results.json").exists(), f"{file}: its results.json is missing"
    declared = {m for m in DVC_YAML.get("metrics", [])}
    assert all((paths.PROJ_ROOT / m).exists() for m in declared)

"""Run a stage's notebook the way ``dvc repro`` does: ``python -m masklab run-notebook <stage> [<dataset>]``.

Notebooks are stored as jupytext percent-format scripts (``notebooks/NN-topic.py``, see ``notebooks/jupytext.toml``):
:func:`read_notebook` turns one into the notebook papermill executes, in the project's kernel
(:mod:`masklab.kernel`).

One source of truth for parameters: the stage's section of ``params.yaml`` goes to papermill as is (lists stay
lists), checked against the notebook's ``parameters`` cell first, so a key that the notebook does not read, or a
notebook parameter that ``params.yaml`` does not set, is an error instead of a silent default. ``run-notebook``
also sets ``update_results = True``: the notebook writes ``results/`` and ``models/`` (run with its defaults, in
JupyterLab, it writes ``scratch/``; see :func:`masklab.paths.output_dirs`). The executed notebook is then
normalized (``masklab.records``) so DVC hashes the same bytes on every run.

While the notebook runs, the kernel's standard error passes through a filter that drops TensorFlow's C++
start-up lines (they are written before TensorFlow's own log level applies: CUDA probing on machines without a
GPU, oneDNN notes, graph-attribute notices) and the kernel's transport warning (:data:`masklab.kernel.NOISE`);
everything else, errors
included, goes through. Cell output that is printed (one line per training epoch or phase) is shown as it comes.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from masklab import kernel, paths, records

# stage -> notebook (percent-format script in notebooks/); stages without a dataset run once
NOTEBOOKS = {
    "baseline": "10-baseline.py",
    "neuron_masks": "20-neuron-masks.py",
    "unit_importance": "21-unit-importance.py",
    "sparse_pathways": "30-sparse-connectivity.py",
    "sparse_connectivity": "31-sparse-receptive-fields.py",
    "neuron_surgery": "40-neuron-surgery.py",
    "pruning": "41-pruning.py",
    "nsdropout": "50-nsdropout.py",
    "nsdropout_variants": "51-nsdropout-leak-free.py",
}
WITHOUT_DATASET = {"sparse_pathways"}
# notebook parameters that params.yaml does not set: the dataset and update_results (run-notebook sets both),
# locations (None = the project's folders) and the baseline's verbosity
LOCATION_PARAMETERS = {"dataset", "update_results", "data_dir", "results_dir", "models_dir", "verbose",
                       "hierarchy_results_dir"}


class StageError(ValueError):
    """A stage name, dataset or ``params.yaml`` section that the notebook cannot run with, or no ``masklab`` kernel."""


def executed_path(stage: str, dataset: str | None) -> Path:
    name = stage if dataset is None else f"{stage}-{dataset}"
    return paths.RESULTS_DIR / "executed" / f"{name}.ipynb"


def read_notebook(path: str | os.PathLike):
    """The notebook stored in the percent-format script ``path``, as papermill executes it: cells numbered
    ``cell-1``, ``cell-2``, ... (jupytext draws random ids, which would change the executed notebook on every run),
    jupytext's own metadata left out."""
    import jupytext

    notebook = jupytext.read(path, fmt="py:percent")
    notebook.metadata.pop("jupytext", None)
    for number, cell in enumerate(notebook.cells, start=1):
        cell.id = f"cell-{number}"
    return notebook


def stage_parameters(stage: str, dataset: str | None, params_file: str | os.PathLike | None = None) -> dict:
    """The papermill parameters of ``stage``: its ``params.yaml`` section checked against the notebook, the
    dataset, and ``update_results=True`` (write ``results/`` and ``models/``, not ``scratch/``)."""
    import papermill

    if stage not in NOTEBOOKS:
        raise StageError(f"stage must be one of {sorted(NOTEBOOKS)}. Received: stage={stage!r}")
    if (dataset is None) != (stage in WITHOUT_DATASET):
        raise StageError(f"stage {stage!r} {'takes no' if stage in WITHOUT_DATASET else 'needs a'} dataset. "
                         f"Received: dataset={dataset!r}")
    params_file = Path(params_file or paths.PARAMS_FILE)
    params = yaml.safe_load(params_file.read_text()) or {}
    if stage not in params or not isinstance(params[stage], dict):
        raise StageError(f"{params_file}: missing section {stage!r} (the parameters of "
                         f"notebooks/{NOTEBOOKS[stage]})")
    if dataset is not None and dataset not in params.get("datasets", []):
        raise StageError(f"{params_file}: dataset {dataset!r} is not in datasets {params.get('datasets')}")
    values = dict(params[stage])
    notebook = paths.NOTEBOOKS_DIR / NOTEBOOKS[stage]
    declared = set(papermill.inspect_notebook(read_notebook(notebook)))
    if "update_results" not in declared or (dataset is not None and "dataset" not in declared):
        raise StageError(f"notebooks/{NOTEBOOKS[stage]}: the parameters cell must declare update_results"
                         f"{' and dataset' if dataset is not None else ''} (run-notebook sets them)")
    unknown = sorted(set(values) - declared)
    missing = sorted(declared - set(values) - LOCATION_PARAMETERS)
    if unknown or missing:
        raise StageError(f"{params_file}: section {stage!r} and the parameters cell of notebooks/{NOTEBOOKS[stage]} "
                         f"disagree: {('keys the notebook does not read: ' + str(unknown)) if unknown else ''}"
                         f"{'; ' if unknown and missing else ''}"
                         f"{('notebook parameters without a key: ' + str(missing)) if missing else ''}")
    if dataset is not None:
        values["dataset"] = dataset
    values["update_results"] = True
    return values


@contextmanager
def filtered_stderr():
    """Route file descriptor 2 (inherited by the kernel process) through a thread that drops
    :data:`masklab.kernel.NOISE`; restored on exit."""
    sys.stderr.flush()
    restore = kernel.filter_lines(2)
    try:
        yield
    finally:
        sys.stderr.flush()
        restore()


class _Prefixed:
    """A text stream that writes each line of what the notebook's cells print, prefixed with the stage."""

    def __init__(self, prefix: str, stream):
        self.prefix, self.stream = prefix, stream

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.stream.write(f"{self.prefix} {line}\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def run_notebook(stage: str, dataset: str | None = None, params_file=None, output: str | os.PathLike | None = None):
    """Execute the stage's notebook with its ``params.yaml`` parameters in the ``masklab`` kernel (what cells print
    is shown, prefixed with the stage), normalize it; returns its path."""
    import papermill

    parameters = stage_parameters(stage, dataset, params_file)
    try:
        kernel_name = kernel.check_installed()
    except RuntimeError as exc:
        raise StageError(str(exc)) from None
    output = Path(output) if output else executed_path(stage, dataset)
    output.parent.mkdir(parents=True, exist_ok=True)
    printed = _Prefixed(f"[{stage}{'@' + dataset if dataset else ''}]", sys.stdout)
    with filtered_stderr():
        papermill.execute_notebook(read_notebook(paths.NOTEBOOKS_DIR / NOTEBOOKS[stage]), str(output),
                                   parameters=parameters, kernel_name=kernel_name, progress_bar=False,
                                   log_output=False, stdout_file=printed)
    # papermill records its input as given: here the notebook itself; record the script it came from
    executed = json.loads(output.read_text())
    executed["metadata"]["papermill"]["input_path"] = f"notebooks/{NOTEBOOKS[stage]}"
    output.write_text(json.dumps(executed))
    records.normalize_executed_notebook(output)
    return output

"""Run a stage's notebook the way ``dvc repro`` does: ``python -m masklab run-notebook <stage> [<dataset>]``.

One source of truth for parameters: the stage's section of ``params.yaml`` goes to papermill as is (lists stay
lists), checked against the notebook's ``parameters`` cell first, so a key that the notebook does not read, or a
notebook parameter that ``params.yaml`` does not set, is an error instead of a silent default. The executed
notebook is then normalized (``masklab.records``) so DVC hashes the same bytes on every run.

While the notebook runs, the kernel's standard error passes through a filter that drops TensorFlow's C++
start-up lines (they are written before TensorFlow's own log level applies: CUDA probing on machines without a
GPU, oneDNN notes, graph-attribute notices) and the kernel's transport warning; everything else, errors
included, goes through. Cell output that is printed (one line per training epoch or phase) is shown as it comes.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import yaml

from masklab import paths, records

# stage -> notebook; stages without a dataset run once
NOTEBOOKS = {
    "baseline": "10-baseline.ipynb",
    "neuron_masks": "20-neuron-masks.ipynb",
    "unit_importance": "21-unit-importance.ipynb",
    "sparse_pathways": "30-sparse-connectivity.ipynb",
    "sparse_connectivity": "31-sparse-receptive-fields.ipynb",
    "neuron_surgery": "40-neuron-surgery.ipynb",
    "pruning": "41-pruning.ipynb",
    "nsdropout": "50-nsdropout.ipynb",
}
WITHOUT_DATASET = {"sparse_pathways"}
# notebook parameters that params.yaml does not set: locations (None = the project's folders) and the dataset
LOCATION_PARAMETERS = {"dataset", "data_dir", "results_dir", "models_dir", "verbose"}

_NOISE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
                    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                    r"|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption"
                    r"|To enable the following instructions: .* rebuild TensorFlow)")


class StageError(ValueError):
    """A stage name, dataset or ``params.yaml`` section that the notebook cannot run with."""


def executed_path(stage: str, dataset: str | None) -> Path:
    name = stage if dataset is None else f"{stage}-{dataset}"
    return paths.RESULTS_DIR / "executed" / f"{name}.ipynb"


def stage_parameters(stage: str, dataset: str | None, params_file: str | os.PathLike | None = None) -> dict:
    """The papermill parameters of ``stage`` from ``params.yaml``, checked against the notebook."""
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
    declared = set(papermill.inspect_notebook(str(notebook)))
    unknown = sorted(set(values) - declared)
    missing = sorted(declared - set(values) - LOCATION_PARAMETERS)
    if unknown or missing:
        raise StageError(f"{params_file}: section {stage!r} and the parameters cell of notebooks/{NOTEBOOKS[stage]} "
                         f"disagree: {('keys the notebook does not read: ' + str(unknown)) if unknown else ''}"
                         f"{'; ' if unknown and missing else ''}"
                         f"{('notebook parameters without a key: ' + str(missing)) if missing else ''}")
    if dataset is not None:
        values["dataset"] = dataset
    return values


@contextmanager
def filtered_stderr(stream=None):
    """Route file descriptor 2 (inherited by the kernel process) through a thread that drops :data:`_NOISE`."""
    stream = stream or sys.__stderr__
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sink = os.fdopen(original, "w", closefd=False)

    def pump():
        with os.fdopen(read_end, "r", errors="replace") as lines:
            for line in lines:
                if not _NOISE.match(line):
                    sink.write(line)
                    sink.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump sees end-of-file
        thread.join(timeout=10)
        os.close(original)


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
    """Execute the stage's notebook with its ``params.yaml`` parameters (what cells print is shown, prefixed
    with the stage), normalize it; returns its path."""
    import papermill

    parameters = stage_parameters(stage, dataset, params_file)
    output = Path(output) if output else executed_path(stage, dataset)
    output.parent.mkdir(parents=True, exist_ok=True)
    printed = _Prefixed(f"[{stage}{'@' + dataset if dataset else ''}]", sys.stdout)
    with filtered_stderr():
        papermill.execute_notebook(str(paths.NOTEBOOKS_DIR / NOTEBOOKS[stage]), str(output), parameters=parameters,
                                   kernel_name="python3", progress_bar=False, log_output=False, stdout_file=printed)
    records.normalize_executed_notebook(output)
    return output

"""Every path in masklab comes from one anchor, ``PROJ_ROOT``, never from the current directory.

``MASKLAB_ROOT`` overrides the anchor (useful when the package is installed outside its checkout).

Two places to write: ``results/`` and ``models/`` hold the pipeline's outputs (what ``dvc repro`` writes and
``dvc.lock`` hashes); ``scratch/`` (git-ignored, not tracked by DVC) takes what a notebook writes when a person runs
it in JupyterLab, unless they ask for the real folders: see :func:`output_dirs`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

PROJ_ROOT = Path(os.environ.get("MASKLAB_ROOT", Path(__file__).resolve().parents[2])).resolve()
DATA_DIR = PROJ_ROOT / "data"
MODELS_DIR = PROJ_ROOT / "models"
RESULTS_DIR = PROJ_ROOT / "results"
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
PARAMS_FILE = PROJ_ROOT / "params.yaml"
SCRATCH_DIR = PROJ_ROOT / "scratch"


def prepared_data_path(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``data/<dataset>.npz``, written by the ``prepare`` stage."""
    return Path(data_dir or DATA_DIR) / f"{dataset}.npz"


def stage_results_dir(stage: str, dataset: str, results_dir: str | os.PathLike | None = None) -> Path:
    """``results/<stage>/<dataset>/``; created if missing. ``results_dir`` replaces ``results/<stage>``."""
    path = Path(results_dir) if results_dir else RESULTS_DIR / stage / dataset
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_path(stage: str, dataset: str, models_dir: str | os.PathLike | None = None) -> Path:
    """``models/<stage>/<dataset>.keras``; the parent folder is created if missing."""
    path = Path(models_dir or MODELS_DIR / stage) / f"{dataset}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class OutputDirs(NamedTuple):
    results: Path
    models: Path


def output_dirs(stage: str, dataset: str, update_results: bool, results_dir: str | os.PathLike | None = None,
                models_dir: str | os.PathLike | None = None) -> OutputDirs:
    """Where a notebook writes: ``results/<stage>/<dataset>/`` and ``models/<stage>/`` when ``update_results`` is
    True (``python -m masklab run-notebook``, i.e. ``dvc repro``, sets it), otherwise the same folders under
    ``scratch/``, so that running a notebook with its defaults leaves the pipeline's outputs alone. A given
    ``results_dir`` / ``models_dir`` is used as is either way. ``stage`` is the folder name under ``results/``."""
    if not isinstance(update_results, bool):
        raise TypeError(f"update_results must be True or False. Received: update_results={update_results!r}")
    results_root, models_root = (RESULTS_DIR, MODELS_DIR) if update_results else (SCRATCH_DIR / "results",
                                                                                   SCRATCH_DIR / "models")
    return OutputDirs(Path(results_dir) if results_dir else results_root / stage / dataset,
                      Path(models_dir) if models_dir else models_root / stage)

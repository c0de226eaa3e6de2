"""Every path in masklab comes from one anchor, ``PROJ_ROOT``, never from the current directory.

``MASKLAB_ROOT`` overrides the anchor (useful when the package is installed outside its checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJ_ROOT = Path(os.environ.get("MASKLAB_ROOT", Path(__file__).resolve().parents[2])).resolve()
DATA_DIR = PROJ_ROOT / "data"
MODELS_DIR = PROJ_ROOT / "models"
RESULTS_DIR = PROJ_ROOT / "results"
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
PARAMS_FILE = PROJ_ROOT / "params.yaml"


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

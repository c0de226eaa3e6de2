"""Writing results so that a rerun gives the same bytes: sorted JSON, fixed CSV float format.

Each stage writes ``metrics.json`` (a few headline numbers, :func:`write_metrics`: what ``dvc metrics show``
reads) and ``results.json`` (everything else: curves, tables, split fingerprints, the params echo)."""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd


def _plain(value):
    """NumPy scalars and arrays -> Python types; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON with sorted keys."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")
    return path


def write_metrics(metrics: dict, path: str | os.PathLike) -> Path:
    """Write a stage's headline numbers: the small flat file that ``dvc metrics show`` and ``dvc metrics diff``
    read (``metrics.json``). Values must be numbers or booleans under plain string keys; everything richer
    (curves, tables, fingerprints, the params echo) belongs in the stage's ``results.json``."""
    if not isinstance(metrics, dict) or not metrics:
        raise TypeError(f"metrics must be a non-empty flat dict of numbers. Received: {type(metrics).__name__}")
    for key, value in metrics.items():
        if not isinstance(key, str) or "." in key:
            raise ValueError(f"metric names must be strings without dots (DVC joins nested keys with dots). "
                             f"Received: {key!r}")
        if not isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
            raise TypeError(f"metric {key!r} must be a number or a boolean; put structured results in "
                            f"results.json. Received: {type(value).__name__}")
    return write_json(metrics, path)


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` without its index, floats with 8 significant digits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.8g")
    return path


def _renumber_shared_objects(config):
    """Keras marks objects used in several places with ``shared_object_id`` = their memory address (different in
    every process); number them 1, 2, ... in order of appearance instead (only equality matters on loading)."""
    numbers: dict = {}

    def walk(node):
        if isinstance(node, dict):
            return {key: (numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id" else walk(value))
                    for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(config)


def save_model(model, path: str | os.PathLike) -> Path:
    """``model.save(path)`` (a ``.keras`` archive), then rewritten so the same model always gives the same bytes:
    every zip entry dated 1980-01-01, no save date in ``metadata.json``, and shared-object ids numbered instead of
    being memory addresses (Keras writes the time of saving and ``id()`` values, which changed every downstream
    hash in ``dvc.lock`` on each run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    scratch = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(scratch, "w") as archive:
        for info, content in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(content)
                metadata.pop("date_saved", None)
                content = json.dumps(metadata, sort_keys=True).encode()
            elif info.filename == "config.json":
                content = json.dumps(_renumber_shared_objects(json.loads(content))).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            archive.writestr(fixed, content)
    os.replace(scratch, path)
    return path


# What differs between two runs of the same notebook and says nothing about its results: TensorFlow's C++ log
# lines (timestamps, thread ids), absl's preamble, tf.function retracing warnings, memory addresses.
_VOLATILE_LINES = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*"
                             r"|WARNING: All log messages before absl::InitializeLog\(\) is called.*"
                             r"|WARNING:tensorflow:.*triggered tf\.function retracing.*"
                             # TensorFlow's start-up notes: they name this machine's CPU features
                             r"|To enable the following instructions: .* rebuild TensorFlow with .*"
                             r"|.*oneDNN custom operations are on.*)$", re.M)
_ADDRESS = re.compile(r"0x[0-9a-f]{6,}")
# Keras progress lines: "28/28 - 1s - 33ms/step - accuracy: ..." (the numbers after the timings stay)
_STEP_TIMES = re.compile(r"(?<![\w.])(?:\d+(?:\.\d+)?(?:ms|us|µs|s)(?:/step)?)(?= |$)", re.M)
_TIMING_KEYS = ("start_time", "end_time", "duration")


def normalize_executed_notebook(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Rewrite a notebook executed by papermill so that rerunning it writes the same bytes: drop execution
    timestamps and durations, log noise (TensorFlow's C++ logs, retracing warnings) and memory addresses, and
    write paths under the project root relative to it. Results (tables, figures, printed numbers) stay."""
    from masklab import paths

    path = Path(path)
    root = f"{Path(root or paths.PROJ_ROOT)}/"
    notebook = json.loads(path.read_text())
    papermill_metadata = notebook.get("metadata", {}).get("papermill", {})
    for key in _TIMING_KEYS:
        papermill_metadata.pop(key, None)
    for key in ("input_path", "output_path"):  # where the checkout lies is not a result
        if isinstance(papermill_metadata.get(key), str):
            papermill_metadata[key] = papermill_metadata[key].replace(root, "")

    def clean(text: str) -> str:
        text = _VOLATILE_LINES.sub("", text)
        text = re.sub(r"\n{2,}", "\n", text).lstrip("\n")
        text = _STEP_TIMES.sub("<time>", text)
        return _ADDRESS.sub("0x...", text.replace(root, ""))

    for cell in notebook.get("cells", []):
        metadata = cell.get("metadata", {})
        metadata.pop("execution", None)
        if "injected-parameters" in metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a new random id for its cell on every run
        for key in _TIMING_KEYS:
            metadata.get("papermill", {}).pop(key, None)
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = clean("".join(output["text"])).splitlines(keepends=True)
                if not output["text"]:
                    continue
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/"):
                    output["data"][mime] = clean("".join(value)).splitlines(keepends=True)
            outputs.append(output)
        if "outputs" in cell:
            cell["outputs"] = outputs
    path.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path

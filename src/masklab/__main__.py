"""Command line: ``python -m masklab prepare <dataset>`` (the ``prepare`` DVC stage),
``python -m masklab run-notebook <stage> [<dataset>]`` (every notebook stage: its ``params.yaml`` section to
papermill, noise filtered, the executed notebook normalized; see ``masklab.pipeline``),
``python -m masklab normalize-notebook <executed.ipynb>`` (so that the executed notebook DVC hashes comes out the
same on every run: see ``masklab.records``) and ``python -m masklab install-jupyter`` (``make install`` runs it:
the ``masklab`` kernel and JupyterLab's notebook view for ``notebooks/*.py``, in this environment only; see
``masklab.kernel``).

``prepare`` reads ``data.<dataset>`` from ``params.yaml``: ``seed`` and ``val_size`` always, ``test_size`` for a
dataset without an official test set (``mnist_5k``) and only then, optional ``train_size``, and optional
``verify`` (default true; ``false`` is :func:`masklab.data.load`'s escape hatch for a copy that cannot be
verified, recorded in the prepared file's ``source``). Any other key is refused, so a typo cannot be ignored.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from masklab import data, paths, records

SPLIT_PARAMS = ("seed", "val_size", "test_size", "train_size", "verify")


class ParamsError(ValueError):
    """``params.yaml`` is missing, unreadable, lacks a key the command needs or holds one it cannot use."""


def split_params(dataset: str, params_file: str | os.PathLike | None = None) -> dict:
    """``data.<dataset>`` of ``params_file`` (default ``params.yaml``), checked for missing and unknown keys.

    Returns the keys of :data:`SPLIT_PARAMS` (``test_size`` / ``train_size`` None when absent, ``verify`` True).
    Raises :class:`ParamsError` naming the file and the dotted key.
    """
    data._check_dataset_name(dataset)
    params_file = data._check_path(paths.PARAMS_FILE if params_file is None else params_file, "params_file")
    if not params_file.is_file():
        raise ParamsError(f"params file {params_file} does not exist. Received: params_file={str(params_file)!r}")
    try:
        params = yaml.safe_load(params_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ParamsError(f"{params_file}: cannot be read as YAML ({type(exc).__name__}: {exc})") from exc
    section = params
    for depth, key in enumerate(("data", dataset)):
        where = "data." + dataset if depth else "data"
        if not isinstance(section, dict):
            parent = "data" if depth else "the top level"
            raise ParamsError(f"{params_file}: {parent} must be a mapping with key {key!r}, found "
                              f"{type(section).__name__}")
        if key not in section:
            raise ParamsError(f"{params_file}: missing key {where} (the prepare stage's split parameters for "
                              f"{dataset}); present: {sorted(map(str, section))}")
        section = section[key]
    if not isinstance(section, dict):
        raise ParamsError(f"{params_file}: data.{dataset} must be a mapping of {SPLIT_PARAMS}, found "
                          f"{type(section).__name__}")
    has_official_test = data.OFFICIAL_SIZES[dataset][1] > 0
    required = ("seed", "val_size") + (() if has_official_test else ("test_size",))
    missing = [key for key in required if key not in section]
    if missing:
        raise ParamsError(f"{params_file}: missing key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(f'data.{dataset}.{k}' for k in missing)}")
    unknown = sorted(str(key) for key in section if key not in SPLIT_PARAMS)
    if unknown:
        raise ParamsError(f"{params_file}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(f'data.{dataset}.{k}' for k in unknown)}; expected some of {SPLIT_PARAMS}")
    if has_official_test and "test_size" in section:
        raise ParamsError(f"{params_file}: data.{dataset}.test_size must be absent: {dataset} has an official "
                          f"test set. Received: test_size={section['test_size']!r}")
    verify = section.get("verify", True)
    if not isinstance(verify, bool):
        raise ParamsError(f"{params_file}: data.{dataset}.verify must be true or false. Received: verify={verify!r}")
    return {"seed": section["seed"], "val_size": section["val_size"], "test_size": section.get("test_size"),
            "train_size": section.get("train_size"), "verify": verify}


def prepare(dataset: str, params_file: str | os.PathLike | None = None,
            data_dir: str | os.PathLike | None = None) -> Path:
    """Load ``dataset``, carve its splits with ``params.yaml: data.<dataset>`` and write
    ``<data_dir>/<dataset>.npz`` (default ``data/``); returns its path. Same inputs, same bytes."""
    params_file = paths.PARAMS_FILE if params_file is None else params_file
    params = split_params(dataset, params_file)
    if data_dir is not None:
        data_dir = data._check_path(data_dir, "data_dir")
    loaded = data.load(dataset, verify=params.pop("verify"))
    try:
        splits = data.make_splits(loaded, **params)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{params_file}: data.{dataset}: {exc}") from exc
    path = data.save_splits(splits, paths.prepared_data_path(dataset, data_dir))
    summary = splits.summary()
    print(f"{dataset} from {summary['source']}: sizes {summary['sizes']}, fingerprints {summary['fingerprints']}")
    print(f"wrote {path}")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m masklab")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write data/<dataset>.npz with the train/val/test splits")
    p.add_argument("dataset", choices=data.DATASETS)
    n = sub.add_parser("normalize-notebook", help="strip timings and log noise from a notebook papermill executed")
    n.add_argument("notebook", type=Path)
    r = sub.add_parser("run-notebook", help="execute a stage's notebook with its params.yaml section")
    r.add_argument("stage")
    r.add_argument("dataset", nargs="?")
    sub.add_parser("install-jupyter", help="install the 'masklab' kernel and JupyterLab's .py notebook view into "
                                           "this environment (sys.prefix)")
    args = parser.parse_args(argv)
    if args.command == "install-jupyter":
        from masklab import kernel

        for path in kernel.install():
            print(f"wrote {path}")
        return 0
    if args.command == "run-notebook":
        from masklab import pipeline

        try:
            path = pipeline.run_notebook(args.stage, args.dataset)
        except pipeline.StageError as exc:
            print(f"python -m masklab run-notebook: error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {path}")
        return 0
    if args.command == "normalize-notebook":
        if not args.notebook.is_file():
            print(f"python -m masklab normalize-notebook: error: {args.notebook} does not exist", file=sys.stderr)
            return 1
        records.normalize_executed_notebook(args.notebook)
        return 0
    if args.command == "prepare":
        try:
            prepare(args.dataset)
        except (ParamsError, data.DataNotFoundError, data.CorruptDataError) as exc:
            print(f"python -m masklab prepare: error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

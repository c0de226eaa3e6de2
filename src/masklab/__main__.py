"""Command line: ``python -m masklab prepare <dataset>`` (the ``prepare`` DVC stage)."""

from __future__ import annotations

import argparse
import sys

import yaml

from masklab import data, paths


def prepare(dataset: str, params_file=paths.PARAMS_FILE, data_dir=None) -> None:
    """Load ``dataset``, carve its splits with ``params.yaml: data.<dataset>`` and write ``data/<dataset>.npz``."""
    params = yaml.safe_load(open(params_file))["data"][dataset]
    splits = data.make_splits(data.load(dataset), seed=params["seed"], val_size=params["val_size"],
                              test_size=params.get("test_size"), train_size=params.get("train_size"))
    path = data.save_splits(splits, paths.prepared_data_path(dataset, data_dir))
    summary = splits.summary()
    print(f"{dataset} from {summary['source']}: sizes {summary['sizes']}, fingerprints {summary['fingerprints']}")
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m masklab")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write data/<dataset>.npz with the train/val/test splits")
    p.add_argument("dataset", choices=data.DATASETS)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Epoch time of masklab.training.train vs plain keras model.fit, same model, data and settings.

Both fit the seeds' 784-600-10 MLP on the same training split with the same validation data each epoch;
the first epoch (tracing and compilation) is dropped and the median of the rest is compared.
Target: ratio (masklab / fit) <= 1.0 within noise. Prints the ratio, writes results/benchmarks/training.json.

    python benchmarks/bench_training.py [--dataset mnist_5k] [--epochs 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

import keras

from common import EpochTimer, write_benchmark
from masklab import data, models, training


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="mnist_5k")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    splits = data.load_splits(args.dataset)
    train_data = (data.to_inputs(splits.train.x), splits.train.y)
    val_data = (data.to_inputs(splits.val.x), splits.val.y)
    build = lambda: models.mlp(train_data[0].shape[1], 600, splits.num_classes)  # noqa: E731

    per_epoch = {"masklab_train": [], "keras_fit": []}
    for _ in range(args.repeats):  # alternate the two so drifts in machine load hit both
        timer = EpochTimer()
        training.train(build, train_data, val_data, epochs=args.epochs, batch_size=args.batch_size, seed=0,
                       callbacks=(timer,), verbose=0)
        per_epoch["masklab_train"] += timer.seconds[1:]

        timer = EpochTimer()
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile="auto")
        model.fit(*train_data, validation_data=val_data, epochs=args.epochs, batch_size=args.batch_size,
                  shuffle=True, callbacks=[timer], verbose=0)
        per_epoch["keras_fit"] += timer.seconds[1:]

    medians = {k: statistics.median(v) for k, v in per_epoch.items()}
    ratio = medians["masklab_train"] / medians["keras_fit"]
    print(f"{args.dataset}: {len(train_data[1])} training images, batch {args.batch_size}")
    for name, seconds in medians.items():
        print(f"  {name:14s} median epoch {seconds * 1000:8.1f} ms over {len(per_epoch[name])} epochs")
    print(f"  ratio masklab/fit = {ratio:.3f}  (target <= 1.0)")
    write_benchmark("training", {
        "dataset": args.dataset, "train_size": len(train_data[1]), "batch_size": args.batch_size,
        "epochs_timed_per_run": args.epochs - 1, "repeats": args.repeats,
        "median_epoch_seconds": medians, "ratio_masklab_over_fit": ratio, "target": "<= 1.0",
    })


if __name__ == "__main__":
    main()

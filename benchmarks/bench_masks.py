"""NeuronMask costs: (1) train step of the 784-600-10 MLP with a NeuronMask vs without (target <= 1.05);
(2) predict_with_masks for K masks x N images vs a Python loop of K predict calls with set_mask (target >= 5x).

Both pairs run side by side in one process on the same data; medians are compared.
Writes results/benchmarks/masks.json.

    python benchmarks/bench_masks.py [--masks 100] [--images 10000] [--epochs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from common import EpochTimer, write_benchmark
from masklab import ablation
from masklab.layers import NeuronMask


def mlp(with_mask: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((784,)), keras.layers.Dense(600, activation="relu", name="hidden_1")]
    if with_mask:
        layers.append(NeuronMask(name="mask"))
    layers.append(keras.layers.Dense(10, activation="softmax", name="output"))
    model = keras.Sequential(layers)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # timing only: random pixels and labels stand in for images (no accuracy is reported)
    x = rng.random((args.images, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.images)

    epoch_seconds = {"with_mask": [], "without_mask": []}
    for _ in range(args.repeats):
        for name in epoch_seconds:
            timer = EpochTimer()
            mlp(name == "with_mask").fit(x, y, batch_size=128, epochs=args.epochs, callbacks=[timer], verbose=0)
            epoch_seconds[name] += timer.seconds[1:]
    step_ratio = statistics.median(epoch_seconds["with_mask"]) / statistics.median(epoch_seconds["without_mask"])

    model = mlp(True)
    layer = model.get_layer("mask")
    masks = (rng.random((args.masks, 600)) >= 0.5).astype(np.float32)
    batched_s, loop_s = [], []
    for _ in range(args.repeats):
        layer.clear_mask()  # the batched path runs through this layer too: keep its stored mask neutral
        start = time.perf_counter()
        batched = ablation.predict_with_masks(model, "hidden_1", x, masks)
        batched_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        looped = []
        for mask in masks:
            layer.set_mask(mask)
            looped.append(model.predict(x, batch_size=1024, verbose=0))
        loop_s.append(time.perf_counter() - start)
    layer.clear_mask()
    max_diff = float(np.abs(batched - np.stack(looped)).max())
    speedup = statistics.median(loop_s) / statistics.median(batched_s)

    print(f"train epoch with NeuronMask / without: {step_ratio:.3f}  (target <= 1.05)")
    print(f"predict_with_masks K={args.masks} x N={args.images}: {statistics.median(batched_s):.2f} s; "
          f"loop of set_mask + predict: {statistics.median(loop_s):.2f} s; speedup {speedup:.1f}x (target >= 5x); "
          f"max |difference| {max_diff:.2e}")
    write_benchmark("masks", {
        "train_epoch_seconds_median": {k: statistics.median(v) for k, v in epoch_seconds.items()},
        "train_step_ratio_with_over_without": step_ratio, "train_step_target": "<= 1.05",
        "predict_with_masks_seconds_median": statistics.median(batched_s),
        "set_mask_loop_seconds_median": statistics.median(loop_s),
        "predict_speedup": speedup, "predict_speedup_target": ">= 5", "max_abs_difference": max_diff,
        "masks": args.masks, "images": args.images, "repeats": args.repeats,
    })


if __name__ == "__main__":
    main()

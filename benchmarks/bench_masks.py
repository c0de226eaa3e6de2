"""NeuronMask and batched-ablation costs, on the 784-600-10 MLP:
(1) train step with a NeuronMask vs without (target <= 1.05);
(2) predict_with_masks for K masks x N images vs a Python loop of K predict calls with set_mask (target >= 25x);
(3) its masked rows per second vs a plain compiled run of the layers after the mask on as many unmasked rows, in
    batches of the same size (target >= 0.5);
(4) all 600 single-unit ablations on 60 000 images: time and peak memory of a fresh process (target <= 2 GB).

Both pairs run side by side in one process on the same data; medians are compared.
Writes results/benchmarks/masks.json.

    python benchmarks/bench_masks.py [--masks 100] [--images 10000] [--epochs 5] [--single-unit-images 60000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from common import EpochTimer, compiled, median_ms, write_benchmark
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single-unit-images", type=int, default=60000)
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
    tail = compiled(keras.Model(model.get_layer("hidden_1").output, model.outputs))  # mask layer + output
    k_chunk, n_chunk = ablation.core._plan(model, ablation.core.targets_of(model, "hidden_1"),
                                                args.masks, args.images, None)
    tail_batch = rng.random((k_chunk * n_chunk, 600), dtype=np.float32)
    tail_calls = -(-args.masks * args.images // len(tail_batch))
    batched_s, xla_s, loop_s, tail_s = [], [], [], []
    ablation.predict_with_masks(model, "hidden_1", x[:500], masks)  # trace both variants before timing
    ablation.predict_with_masks(model, "hidden_1", x[:500], masks, jit_compile=True)
    for _ in range(args.repeats):
        layer.clear_mask()  # the batched path runs through this layer too: keep its stored mask neutral
        start = time.perf_counter()
        batched = ablation.predict_with_masks(model, "hidden_1", x, masks)
        batched_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        with_xla = ablation.predict_with_masks(model, "hidden_1", x, masks, jit_compile=True)
        xla_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        looped = []
        for mask in masks:
            layer.set_mask(mask)
            looped.append(model.predict(x, batch_size=1024, verbose=0))
        loop_s.append(time.perf_counter() - start)
        layer.clear_mask()
        # the same number of rows through a plain compiled tail, unmasked, in batches of the chunk size
        tail_s.append(median_ms({"tail": tail}, tail_batch, rounds=5)["tail"] * tail_calls / 1000)
    max_diff = float(np.abs(batched - np.stack(looped)).max())
    max_diff_xla = float(np.abs(with_xla - np.stack(looped)).max())
    del looped, batched, with_xla
    speedup = statistics.median(loop_s) / statistics.median(batched_s)
    speedup_xla = statistics.median(loop_s) / statistics.median(xla_s)
    throughput = statistics.median(tail_s) / statistics.median(batched_s)
    single = single_unit_memory(args.single_unit_images)

    print(f"train epoch with NeuronMask / without: {step_ratio:.3f}  (target <= 1.05)")
    print(f"predict_with_masks K={args.masks} x N={args.images}: {statistics.median(batched_s):.2f} s; "
          f"loop of set_mask + predict: {statistics.median(loop_s):.2f} s; speedup {speedup:.1f}x (target >= 25x); "
          f"max |difference| {max_diff:.2e}")
    print(f"  with jit_compile=True (XLA): {statistics.median(xla_s):.2f} s; speedup {speedup_xla:.1f}x; "
          f"max |difference| {max_diff_xla:.2e}")
    print(f"masked rows per second / a plain compiled tail's on unmasked rows ({k_chunk * n_chunk} per call): "
          f"{throughput:.2f} (target >= 0.5)")
    print(f"all 600 single-unit ablations on {args.single_unit_images} images: {single['seconds']:.1f} s, peak RSS "
          f"{single['peak_rss_mb']:.0f} MB for the whole process, {single['rss_before_mb']:.0f} MB of it before the "
          f"call (TensorFlow, model, data) (target <= 2048 MB)")
    write_benchmark("masks", {
        "train_epoch_seconds_median": {k: statistics.median(v) for k, v in epoch_seconds.items()},
        "train_step_ratio_with_over_without": step_ratio, "train_step_target": "<= 1.05",
        "predict_with_masks_seconds_median": statistics.median(batched_s),
        "set_mask_loop_seconds_median": statistics.median(loop_s),
        "predict_speedup": speedup, "predict_speedup_target": ">= 25", "max_abs_difference": max_diff,
        "predict_with_masks_xla_seconds_median": statistics.median(xla_s), "predict_speedup_xla": speedup_xla,
        "max_abs_difference_xla": max_diff_xla,
        "plain_tail_seconds_median": statistics.median(tail_s), "rows_per_call": k_chunk * n_chunk,
        "masked_throughput_over_plain_tail": throughput, "throughput_target": ">= 0.5",
        "single_unit_ablation": {**single, "target_peak_rss_mb": "<= 2048"},
        "masks": args.masks, "images": args.images, "repeats": args.repeats,
    })


def single_unit_memory(images: int) -> dict:
    """All 600 single-unit ablations of the MLP on ``images`` images, in a fresh process (so its peak resident
    memory is this computation's): seconds and peak RSS."""
    code = f"""
import json, resource, time, numpy as np, keras
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_masks import mlp
from masklab import ablation
rng = np.random.default_rng(1)
x = rng.random(({images}, 784), dtype=np.float32); y = rng.integers(0, 10, {images})
model = mlp(False)
before = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
start = time.perf_counter()
table = ablation.single_unit_ablation(model, "hidden_1", x, y)
seconds = time.perf_counter() - start
assert len(table) == 600
print(json.dumps(dict(seconds=seconds, rss_before_mb=before,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, images={images})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])

if __name__ == "__main__":
    main()

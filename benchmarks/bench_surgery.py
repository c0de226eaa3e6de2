"""Inference latency, masked vs physically removed (batch 256, compiled predict):
(1) the 784-600-10 MLP with 50 % of its hidden units removed vs the same model with them masked by a NeuronMask
(target >= 1.6x faster); (2) seed 004's CNN with 50 % of the filters of both conv layers removed vs the full model:
measured speedup and the multiply-accumulate counts (FLOPs = 2 x MACs) before and after.

Side by side in one process, interleaved rounds; medians compared. Writes results/benchmarks/surgery.json.

    python benchmarks/bench_surgery.py [--batch 256] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from common import write_benchmark
from masklab import models, surgery
from masklab.layers import NeuronMask, keep_mask


def masked_mlp(drop) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((784,))
    h = keras.layers.Dense(600, activation="relu", name="hidden_1")(inputs)
    h = NeuronMask(initial_mask=keep_mask(600, drop), name="mask")(h)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="output")(h))


def macs(model: keras.Model) -> int:
    """Multiply-accumulates of the Dense and Conv2D layers for one input."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += int(np.prod(layer.kernel.shape)) * height * width
    return total


def timed(models_by_name: dict, x: np.ndarray, rounds: int) -> dict[str, float]:
    for model in models_by_name.values():
        model.predict_on_batch(x)  # compile
    seconds = {name: [] for name in models_by_name}
    for _ in range(rounds):
        for name, model in models_by_name.items():
            start = time.perf_counter()
            model.predict_on_batch(x)
            seconds[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    drop = np.sort(rng.choice(600, 300, replace=False))
    masked = masked_mlp(drop)
    removed = surgery.remove_units(masked, "hidden_1", drop)
    x = rng.random((args.batch, 784), dtype=np.float32)
    max_diff = float(np.abs(masked.predict_on_batch(x) - removed.predict_on_batch(x)).max())
    mlp_ms = timed({"masked": masked, "removed": removed}, x, args.rounds)
    mlp_speedup = mlp_ms["masked"] / mlp_ms["removed"]

    keras.utils.set_random_seed(0)
    cnn = models.seed_cnn()
    pruned = surgery.remove_units(cnn, "conv_1", np.arange(0, 32, 2))
    pruned = surgery.remove_units(pruned, "conv_2", np.arange(0, 64, 2))
    images = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    cnn_ms = timed({"full": cnn, "half_filters": pruned}, images, max(5, args.rounds // 3))
    cnn_speedup = cnn_ms["full"] / cnn_ms["half_filters"]
    cnn_macs = {"full": macs(cnn), "half_filters": macs(pruned)}

    print(f"MLP 784-600-10, 300 of 600 hidden units: masked {mlp_ms['masked']:.3f} ms, removed "
          f"{mlp_ms['removed']:.3f} ms -> {mlp_speedup:.2f}x (target >= 1.6x); max |difference| {max_diff:.1e}")
    print(f"seed CNN, half of the filters of conv_1 and conv_2: {cnn_ms['full']:.2f} ms -> "
          f"{cnn_ms['half_filters']:.2f} ms -> {cnn_speedup:.2f}x; MACs {cnn_macs['full']:,} -> "
          f"{cnn_macs['half_filters']:,} ({cnn_macs['full'] / cnn_macs['half_filters']:.2f}x fewer)")
    write_benchmark("surgery", {
        "batch": args.batch, "rounds": args.rounds,
        "mlp": {"latency_ms": mlp_ms, "speedup_removed_over_masked": mlp_speedup, "target": ">= 1.6",
                "max_abs_difference": max_diff},
        "cnn": {"latency_ms": cnn_ms, "speedup": cnn_speedup, "macs": cnn_macs,
                "flops": {k: 2 * v for k, v in cnn_macs.items()}},
    })


if __name__ == "__main__":
    main()

"""Inference latency, masked vs physically removed (batch 256):
(1) the 784-600-10 MLP with 50 % of its hidden units removed vs the same model with them masked by a NeuronMask
(target >= 1.6x faster); (2) seed 004's CNN with 50 % of the filters of both conv layers removed vs the full model:
measured speedup and the multiply-accumulate counts (FLOPs = 2 x MACs) before and after.

The MLP is timed three ways: ``predict_on_batch`` (Keras's predict loop) and one compiled call (a ``tf.function``
graph, and XLA-compiled; no Keras loop, the input already a tensor), and once more at a large batch where the
arithmetic dominates. The per-call overhead is the time of the same call on a model
that does almost nothing (one 10-unit Dense on the same input): what no pruning can remove.

Side by side in one process, interleaved rounds; medians compared. Writes results/benchmarks/surgery.json.

    python benchmarks/bench_surgery.py [--batch 256] [--rounds 30] [--large-batch 4096]
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

from common import compiled, median_ms, write_benchmark
from masklab import models, surgery
from masklab.layers import NeuronMask, keep_mask


def masked_mlp(drop) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((784,))
    h = keras.layers.Dense(600, activation="relu", name="hidden_1")(inputs)
    h = NeuronMask(initial_mask=keep_mask(600, drop), name="mask")(h)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="output")(h))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--large-batch", type=int, default=4096)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    drop = np.sort(rng.choice(600, 300, replace=False))
    masked = masked_mlp(drop)
    removed = surgery.remove_units(masked, "hidden_1", drop)
    x = rng.random((args.batch, 784), dtype=np.float32)
    max_diff = float(np.abs(masked.predict_on_batch(x) - removed.predict_on_batch(x)).max())
    floor = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])  # per-call overhead
    mlp_ms = {"predict_on_batch": median_ms({"masked": masked.predict_on_batch, "removed": removed.predict_on_batch,
                                             "overhead": floor.predict_on_batch}, x, args.rounds)}
    for how, xla in (("graph", False), ("xla", True)):
        mlp_ms[how] = median_ms({"masked": compiled(masked, xla), "removed": compiled(removed, xla),
                                 "overhead": compiled(floor, xla)}, x, args.rounds)
    big = rng.random((args.large_batch, 784), dtype=np.float32)  # same models, a batch where compute dominates
    mlp_ms[f"graph, batch {args.large_batch}"] = median_ms(
        {"masked": compiled(masked), "removed": compiled(removed), "overhead": compiled(floor)}, big,
        max(5, args.rounds // 3))
    mlp_macs = {"masked": surgery.count_macs(masked), "removed": surgery.count_macs(removed)}

    def speedups(ms):
        net = (ms["masked"] - ms["overhead"]) / max(ms["removed"] - ms["overhead"], 1e-9)
        return ms["masked"] / ms["removed"], net

    keras.utils.set_random_seed(0)
    cnn = models.seed_cnn()
    pruned = surgery.remove_units(cnn, "conv_1", np.arange(0, 32, 2))
    pruned = surgery.remove_units(pruned, "conv_2", np.arange(0, 64, 2))
    images = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    cnn_ms = median_ms({"full": compiled(cnn), "half_filters": compiled(pruned)}, images, max(5, args.rounds // 3))
    cnn_speedup = cnn_ms["full"] / cnn_ms["half_filters"]
    cnn_macs = {"full": surgery.count_macs(cnn), "half_filters": surgery.count_macs(pruned)}

    for how, ms in mlp_ms.items():
        speedup, net = speedups(ms)
        print(f"MLP 784-600-10, 300 of 600 hidden units, {how}: masked {ms['masked']:.3f} ms, removed "
              f"{ms['removed']:.3f} ms -> {speedup:.2f}x (target >= 1.6x at batch {args.batch}); per-call overhead "
              f"{ms['overhead']:.3f} ms; net of it {net:.2f}x; MACs {mlp_macs['masked'] / mlp_macs['removed']:.2f}x "
              f"fewer")
    print(f"max |difference| removed vs masked {max_diff:.1e}")
    print(f"seed CNN, half of the filters of conv_1 and conv_2 (compiled call): {cnn_ms['full']:.2f} ms -> "
          f"{cnn_ms['half_filters']:.2f} ms -> {cnn_speedup:.2f}x; MACs {cnn_macs['full']:,} -> "
          f"{cnn_macs['half_filters']:,} ({cnn_macs['full'] / cnn_macs['half_filters']:.2f}x fewer)")
    write_benchmark("surgery", {
        "batch": args.batch, "rounds": args.rounds,
        "mlp": {"latency_ms": mlp_ms,
                "speedup_removed_over_masked": {how: speedups(ms)[0] for how, ms in mlp_ms.items()},
                "speedup_net_of_overhead": {how: speedups(ms)[1] for how, ms in mlp_ms.items()},
                "target": ">= 1.6 at batch 256", "macs": mlp_macs, "max_abs_difference": max_diff},
        "cnn": {"latency_ms": cnn_ms, "speedup": cnn_speedup, "macs": cnn_macs,
                "flops": {k: 2 * v for k, v in cnn_macs.items()}},
    })


if __name__ == "__main__":
    main()

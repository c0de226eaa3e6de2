"""Inference latency, masked vs physically removed (batch 256):
(1) the 784-600-10 MLP with 50 % of its hidden units removed vs the same model with them masked by a NeuronMask
(target >= 1.6x faster); (2) seed 004's CNN with 50 % of the filters of both conv layers removed vs the full model:
measured speedup and the multiply-accumulate counts (FLOPs = 2 x MACs) before and after.

Each is timed two ways: ``predict_on_batch`` (Keras's predict loop) and one XLA-compiled call (``tf.function``,
no Keras loop). The per-call overhead is the time of the same call on a model that does almost nothing (one
10-unit Dense on the same input): what no pruning can remove.

Side by side in one process, interleaved rounds; medians compared. Writes results/benchmarks/surgery.json.

    python benchmarks/bench_surgery.py [--batch 256] [--rounds 30]
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
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    drop = np.sort(rng.choice(600, 300, replace=False))
    masked = masked_mlp(drop)
    removed = surgery.remove_units(masked, "hidden_1", drop)
    x = rng.random((args.batch, 784), dtype=np.float32)
    max_diff = float(np.abs(masked.predict_on_batch(x) - removed.predict_on_batch(x)).max())
    floor = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])  # per-call overhead
    mlp_predict = median_ms({"masked": masked.predict_on_batch, "removed": removed.predict_on_batch,
                             "overhead": floor.predict_on_batch}, x, args.rounds)
    mlp_compiled = median_ms({"masked": compiled(masked), "removed": compiled(removed),
                              "overhead": compiled(floor)}, x, args.rounds)
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

    for how, ms in (("predict_on_batch", mlp_predict), ("compiled call", mlp_compiled)):
        speedup, net = speedups(ms)
        print(f"MLP 784-600-10, 300 of 600 hidden units, {how}: masked {ms['masked']:.3f} ms, removed "
              f"{ms['removed']:.3f} ms -> {speedup:.2f}x (target >= 1.6x); per-call overhead {ms['overhead']:.3f} ms; "
              f"net of it {net:.2f}x; MACs {mlp_macs['masked'] / mlp_macs['removed']:.2f}x fewer")
    print(f"max |difference| removed vs masked {max_diff:.1e}")
    print(f"seed CNN, half of the filters of conv_1 and conv_2 (compiled call): {cnn_ms['full']:.2f} ms -> "
          f"{cnn_ms['half_filters']:.2f} ms -> {cnn_speedup:.2f}x; MACs {cnn_macs['full']:,} -> "
          f"{cnn_macs['half_filters']:,} ({cnn_macs['full'] / cnn_macs['half_filters']:.2f}x fewer)")
    write_benchmark("surgery", {
        "batch": args.batch, "rounds": args.rounds,
        "mlp": {"latency_ms": {"predict_on_batch": mlp_predict, "compiled": mlp_compiled},
                "speedup_removed_over_masked": {"predict_on_batch": speedups(mlp_predict)[0],
                                                "compiled": speedups(mlp_compiled)[0]},
                "speedup_net_of_overhead": {"predict_on_batch": speedups(mlp_predict)[1],
                                            "compiled": speedups(mlp_compiled)[1]},
                "target": ">= 1.6", "macs": mlp_macs, "max_abs_difference": max_diff},
        "cnn": {"latency_ms": cnn_ms, "speedup": cnn_speedup, "macs": cnn_macs,
                "flops": {k: 2 * v for k, v in cnn_macs.items()}},
    })


if __name__ == "__main__":
    main()

"""Whole-model pruning of real architectures: parameters, multiply-accumulates and measured inference latency,
pruned vs original, side by side in one process.

For each keras.applications model (weights=None, 64x64x3 inputs, 10 classes) and each amount (30 %, 50 % of every
dependency group, L2 criterion): the time ``masklab.surgery.prune`` takes, params and MACs before / after, the
max difference to the masked original, and the median latency of one compiled inference call on a batch of 32
(interleaved rounds). Target: latency speedup >= 0.7 x the MAC reduction for the convolutional nets.

    python benchmarks/bench_pruning.py [--models ResNet50,VGG16] [--amounts 0.3,0.5] [--batch 32] [--rounds 10]

Writes results/benchmarks/pruning.json.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import tensorflow as tf

from common import compiled, median_ms, write_benchmark
from masklab import surgery

APPLICATIONS = {
    "ResNet50": keras.applications.ResNet50,
    "MobileNetV2": keras.applications.MobileNetV2,
    "MobileNetV3Small": keras.applications.MobileNetV3Small,
    "EfficientNetB0": keras.applications.EfficientNetB0,
    "DenseNet121": keras.applications.DenseNet121,
    "VGG16": keras.applications.VGG16,
    "ConvNeXtTiny": keras.applications.ConvNeXtTiny,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(APPLICATIONS))
    parser.add_argument("--amounts", default="0.3,0.5")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    amounts = [float(a) for a in args.amounts.split(",")]
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)), tf.float32)
    check = x[:4].numpy()
    results = {}
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        model = APPLICATIONS[name](weights=None, input_shape=(args.size, args.size, 3), classes=10,
                                   classifier_activation=None)
        variants, entry = {"original": model}, {"params": {"original": int(model.count_params())},
                                                "macs": {"original": surgery.count_macs(model)}}
        for amount in amounts:
            result = surgery.prune(model, amount, "l2", x=check)
            key = f"{amount:.0%}"
            variants[key] = result.model
            entry["params"][key], entry["macs"][key] = result.params_after, result.macs_after
            entry.setdefault("prune_seconds", {})[key] = result.seconds
            entry.setdefault("relative_difference", {})[key] = result.relative_difference
            entry.setdefault("groups_pruned", {})[key] = result.summary()["groups_pruned"]
        latency = median_ms({k: compiled(m) for k, m in variants.items()}, x, args.rounds)
        entry["latency_ms"] = latency
        entry["speedup"], entry["mac_reduction"], entry["speedup_over_mac_reduction"] = {}, {}, {}
        for key in variants:
            if key == "original":
                continue
            speedup = latency["original"] / latency[key]
            reduction = entry["macs"]["original"] / entry["macs"][key]
            entry["speedup"][key], entry["mac_reduction"][key] = speedup, reduction
            entry["speedup_over_mac_reduction"][key] = speedup / reduction
            print(f"{name:17s} {key}: params {entry['params']['original'] / 1e6:6.2f}M -> "
                  f"{entry['params'][key] / 1e6:6.2f}M, MACs {entry['macs']['original'] / 1e6:7.1f}M -> "
                  f"{entry['macs'][key] / 1e6:7.1f}M ({reduction:.2f}x), latency {latency['original']:7.1f} -> "
                  f"{latency[key]:7.1f} ms ({speedup:.2f}x = {speedup / reduction:.2f} of the MAC reduction; "
                  f"target >= 0.70), prune {entry['prune_seconds'][key]:.1f} s, relative difference "
                  f"{entry['relative_difference'][key]:.1e}", flush=True)
        results[name] = entry
    write_benchmark("pruning", {"input": [args.size, args.size, 3], "batch": args.batch, "rounds": args.rounds,
                                "criterion": "l2", "scope": "local", "target_speedup_over_mac_reduction": 0.7,
                                "models": results})


if __name__ == "__main__":
    main()

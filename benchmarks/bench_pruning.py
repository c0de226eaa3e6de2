"""Whole-model pruning of real architectures: parameters, multiply-accumulates and measured inference latency,
pruned vs original, side by side in one process.

For each keras.applications model (weights=None, 64x64x3 inputs, 10 classes) and each amount (30 %, 50 % of every
dependency group, L2 criterion): the time ``masklab.surgery.prune`` takes, params, MACs and activation values (memory traffic) before / after, the
max difference to the masked original, and the median latency of one compiled inference call on a batch of 32
(interleaved rounds), as a TensorFlow graph (oneDNN kernels; the headline) and XLA-compiled. Target: latency
speedup >= 0.7 x the MAC reduction for the convolutional nets.

    python benchmarks/bench_pruning.py [--models ResNet50,VGG16] [--amounts 0.3,0.5] [--size 64] [--batch 32]
                                       [--rounds 10] [--name pruning]

Writes results/benchmarks/<name>.json.
"""

from __future__ import annotations

import argparse
import warnings

import keras
import numpy as np

from common import compiled, median_ms, write_benchmark
from masklab import surgery
from masklab.surgery.graph import functional_graph, is_graph_model, ordered_nodes

APPLICATIONS = {
    "ResNet50": keras.applications.ResNet50,
    "MobileNetV2": keras.applications.MobileNetV2,
    "MobileNetV3Small": keras.applications.MobileNetV3Small,
    "EfficientNetB0": keras.applications.EfficientNetB0,
    "DenseNet121": keras.applications.DenseNet121,
    "VGG16": keras.applications.VGG16,
    "ConvNeXtTiny": keras.applications.ConvNeXtTiny,
}


def activation_elements(model: keras.Model) -> int:
    """Values written by every layer call for one sample (the sum of its outputs' sizes, nested models
    included): the memory traffic that element-wise layers, depthwise convolutions and BatchNorm scale with,
    which MACs do not count."""
    total = 0
    for node in ordered_nodes(functional_graph(model)):
        if is_graph_model(node.operation):
            total += activation_elements(node.operation)
            continue
        for tensor in node.output_tensors:
            total += int(np.prod(tensor.shape[1:]))
    return total


def grouped_conv_ms(model: keras.Model, batch: int, rounds: int) -> float | None:
    """Median ms of the model's grouped convolutions (e.g. ConvNeXt's 7x7 depthwise ones) timed one by one on
    inputs of their shapes: how much of the latency sits in them. None if the model has none."""
    layers = [layer for _, layer in surgery.removal.all_layers(model)
              if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1]
    if not layers:
        return None
    rng = np.random.default_rng(0)
    total = 0.0
    for layer in layers:
        x = rng.normal(size=(batch, *layer.input.shape[1:])).astype("float32")
        total += median_ms({"layer": compiled(layer)}, x, rounds)["layer"]
    return total


def main() -> None:
    warnings.filterwarnings("ignore", message="exact=False")  # measured and written to the JSON instead
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(APPLICATIONS))
    parser.add_argument("--amounts", default="0.3,0.5")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--name", default="pruning", help="results/benchmarks/<name>.json")
    parser.add_argument("--inexact", default="ConvNeXtTiny", help="models also pruned with exact=False")
    args = parser.parse_args()
    amounts = [float(a) for a in args.amounts.split(",")]
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    check = x[:4]
    results = {}
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        model = APPLICATIONS[name](weights=None, input_shape=(args.size, args.size, 3), classes=10,
                                   classifier_activation=None)
        variants, entry = {"original": model}, {"params": {"original": int(model.count_params())},
                                                "macs": {"original": surgery.count_macs(model)},
                                                "activations": {"original": activation_elements(model)}}
        for amount in amounts:
            result = surgery.prune(model, amount, "l2", x=check)
            key = f"{amount:.0%}"
            variants[key] = result.model
            entry["params"][key], entry["macs"][key] = result.params_after, result.macs_after
            entry["activations"][key] = activation_elements(result.model)
            entry.setdefault("prune_seconds", {})[key] = result.seconds
            entry.setdefault("relative_difference", {})[key] = result.relative_difference
            entry.setdefault("groups_pruned", {})[key] = result.summary()["groups_pruned"]
        if name in args.inexact.split(","):  # what exact=False (LayerNorm scale/offset sliced) changes, measured
            entry["exact_false_relative_difference"] = {
                f"{amount:.0%}": surgery.prune(model, amount, "l2", x=check, exact=False).relative_difference
                for amount in amounts}
        latency = median_ms({k: compiled(m) for k, m in variants.items()}, x, args.rounds)
        latency_xla = median_ms({k: compiled(m, xla=True) for k, m in variants.items()}, x, max(3, args.rounds // 2))
        entry["latency_ms"], entry["latency_ms_xla"] = latency, latency_xla
        entry["grouped_conv_ms_original"] = grouped_conv_ms(model, args.batch, max(3, args.rounds // 2))
        entry["speedup"], entry["mac_reduction"], entry["speedup_over_mac_reduction"] = {}, {}, {}
        entry["speedup_xla"] = {}
        for key in variants:
            if key == "original":
                continue
            speedup = latency["original"] / latency[key]
            reduction = entry["macs"]["original"] / entry["macs"][key]
            entry["speedup"][key], entry["mac_reduction"][key] = speedup, reduction
            entry["speedup_over_mac_reduction"][key] = speedup / reduction
            entry["speedup_xla"][key] = latency_xla["original"] / latency_xla[key]
            entry.setdefault("activation_reduction", {})[key] = entry["activations"]["original"] / \
                entry["activations"][key]
            print(f"{name:17s} {key}: params {entry['params']['original'] / 1e6:6.2f}M -> "
                  f"{entry['params'][key] / 1e6:6.2f}M, MACs {entry['macs']['original'] / 1e6:7.1f}M -> "
                  f"{entry['macs'][key] / 1e6:7.1f}M ({reduction:.2f}x), latency {latency['original']:7.1f} -> "
                  f"{latency[key]:7.1f} ms ({speedup:.2f}x = {speedup / reduction:.2f} of the MAC reduction; "
                  f"target >= 0.70; activations {entry['activation_reduction'][key]:.2f}x fewer; "
                  f"XLA {latency_xla['original']:.1f} -> {latency_xla[key]:.1f} ms), prune "
                  f"{entry['prune_seconds'][key]:.1f} s, relative difference "
                  f"{entry['relative_difference'][key]:.1e}", flush=True)
        results[name] = entry
    write_benchmark(args.name, {"input": [args.size, args.size, 3], "batch": args.batch, "rounds": args.rounds,
                                "criterion": "l2", "scope": "local", "target_speedup_over_mac_reduction": 0.7,
                                "models": results})


if __name__ == "__main__":
    main()

"""What the in-graph value checks cost: a compiled train step with the NeuronMask / NSDropout checks on vs off.

Inside ``fit`` / ``predict`` a mask value outside [0, 1] (NeuronMask) or a class outside [-1, num_classes)
(NSDropout) cannot be seen from Python, so the layers test every value in the graph and turn the affected samples
into NaN. Target: <= 2 % of a train step. Two models, one step each on a batch of 128 (mnist_5k-sized inputs,
Adam, XLA where Keras uses it), the two variants built and timed side by side, interleaved, medians compared.

    python benchmarks/bench_checks.py [--rounds 1000]

Writes results/benchmarks/checks.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from common import write_benchmark
from masklab import models
from masklab.layers import NeuronMask, NSDropout


def mask_mlp(seed: int) -> keras.Model:
    """784 -> 600 ReLU -> NeuronMask (one mask per input) -> 10, the seeds' network with a mask input."""
    keras.utils.set_random_seed(seed)
    x, masks = keras.Input((784,)), keras.Input((600,))
    hidden = keras.layers.Dense(600, activation="relu")(x)
    return keras.Model([x, masks], keras.layers.Dense(10, activation="softmax")(NeuronMask()([hidden, masks])))


def nsdropout_mlp(seed: int) -> keras.Model:
    return models.dropout_mlp(784, (128, 128, 128), 10, dropout="nsdropout", rate=0.2, refresh="epoch", seed=seed)


def step_ms(builders: dict, inputs, y, rounds: int) -> dict[str, float]:
    """Median ms of one ``train_on_batch`` per variant; each variant is built (and so traced) with its own check
    setting, then the variants are timed round by round."""
    compiled = {}
    for name, (build, layer_class, check) in builders.items():
        layer_class.check_values = check
        model = build(0)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.train_on_batch(inputs, y)  # trace and compile with this setting
        compiled[name] = model
        layer_class.check_values = True
    seconds = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, model in compiled.items():
            start = time.perf_counter()
            model.train_on_batch(inputs, y)
            seconds[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    results = {}
    for name, build, layer_class, second_input in (
            ("NeuronMask", mask_mlp, NeuronMask, rng.integers(0, 2, (args.batch, 600)).astype("float32")),
            ("NSDropout", nsdropout_mlp, NSDropout, y.astype("float32"))):
        ms = step_ms({"checked": (build, layer_class, True), "unchecked": (build, layer_class, False)},
                     [x, second_input], y, args.rounds)
        overhead = ms["checked"] / ms["unchecked"] - 1
        results[name] = {"train_step_ms": ms, "overhead": overhead, "target": "<= 0.02"}
        print(f"{name}: train step {ms['unchecked']:.3f} ms without the value check, {ms['checked']:.3f} ms with it "
              f"-> {100 * overhead:+.1f} % (target <= 2 %)")
    write_benchmark("checks", {"batch": args.batch, "rounds": args.rounds, "models": results})


if __name__ == "__main__":
    main()

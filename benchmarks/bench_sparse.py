"""SparseDense costs at the seed-003 size (9 180 inputs -> 230 units, batch 128, Adam):
train-step time and parameter memory of implementation="sparse" vs "dense" vs a plain keras Dense, at densities
0.5 %, 2 %, 10 %, 50 %. Target: at 1-2 % density sparse/dense step ratio <= 1.0 with trainable parameters == nnz
(+ bias). The crossover (the density where sparse stops being faster) is what SparseDense's "auto" uses.

All models train side by side in one process, in interleaved rounds on the same data; medians are compared.
Writes results/benchmarks/sparse.json.

    python benchmarks/bench_sparse.py [--densities 0.005,0.02,0.1,0.5] [--steps 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import statistics

import keras
import numpy as np

from common import EpochTimer, write_benchmark
from masklab.layers import SparseDense
from masklab.layers import sparse_dense

INPUTS, UNITS, BATCH = 9180, 230, 128


def model_with(hidden: keras.layers.Layer) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((INPUTS,)), hidden, keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=True)
    return model


def variable_bytes(layer: keras.layers.Layer, trainable: bool) -> int:
    weights = layer.trainable_weights if trainable else layer.non_trainable_weights
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in weights))


def crossover(densities, ratios) -> float | None:
    """Density where sparse/dense crosses 1, interpolated on log(density); None if it never does."""
    for (d0, r0), (d1, r1) in zip(zip(densities, ratios), zip(densities[1:], ratios[1:])):
        if r0 <= 1.0 < r1:
            t = (1.0 - r0) / (r1 - r0)
            return float(math.exp(math.log(d0) + t * (math.log(d1) - math.log(d0))))
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--densities", default="0.005,0.02,0.1,0.5")
    parser.add_argument("--steps", type=int, default=20, help="train steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    rng = np.random.default_rng(0)
    # timing only: random inputs and labels (no accuracy is reported)
    x = rng.normal(size=(BATCH * args.steps, INPUTS)).astype(np.float32)
    y = rng.integers(0, 2, len(x))

    rows = []
    plain = model_with(keras.layers.Dense(UNITS, activation="relu"))
    for density in densities:
        connectivity = rng.random((INPUTS, UNITS)) < density
        models = {"plain_dense": plain}
        for implementation in ("dense", "sparse"):
            models[implementation] = model_with(SparseDense(UNITS, connectivity, activation="relu",
                                                            implementation=implementation))
        seconds = {name: [] for name in models}
        for name, model in models.items():  # compile and warm up
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        for _ in range(args.rounds):
            for name, model in models.items():
                timer = EpochTimer()
                model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[timer], verbose=0)
                seconds[name].append(timer.seconds[0] / args.steps)
        step_ms = {name: 1000 * statistics.median(s) for name, s in seconds.items()}
        layers = {name: m.layers[0] for name, m in models.items()}
        row = {
            "density": density, "nnz": int(connectivity.sum()),
            "step_ms": step_ms,
            "sparse_over_dense": step_ms["sparse"] / step_ms["dense"],
            "sparse_over_plain_dense": step_ms["sparse"] / step_ms["plain_dense"],
            "trainable_params": {n: int(sum(np.prod(w.shape) for w in l.trainable_weights))
                                 for n, l in layers.items()},
            "trainable_bytes": {n: variable_bytes(l, True) for n, l in layers.items()},
            "non_trainable_bytes": {n: variable_bytes(l, False) for n, l in layers.items()},
        }
        row["sparse_params_equal_nnz_plus_bias"] = row["trainable_params"]["sparse"] == row["nnz"] + UNITS
        rows.append(row)
        print(f"density {density:6.2%}  nnz {row['nnz']:>8}  step ms: plain Dense {step_ms['plain_dense']:.2f}, "
              f"dense-masked {step_ms['dense']:.2f}, sparse {step_ms['sparse']:.2f}  "
              f"sparse/dense {row['sparse_over_dense']:.2f}  params sparse {row['trainable_params']['sparse']} "
              f"vs dense {row['trainable_params']['dense']}")
        del models

    measured = crossover([r["density"] for r in rows], [r["sparse_over_dense"] for r in rows])
    print(f"crossover (sparse/dense = 1): {measured if measured is None else f'{measured:.1%}'}; "
          f"SparseDense auto uses sparse up to {sparse_dense.AUTO_SPARSE_MAX_DENSITY:.0%}")
    write_benchmark("sparse", {
        "shape": [INPUTS, UNITS], "batch_size": BATCH, "optimizer": "adam", "jit_compile": True,
        "steps_per_epoch": args.steps, "rounds": args.rounds, "rows": rows,
        "crossover_density": measured, "auto_sparse_max_density": sparse_dense.AUTO_SPARSE_MAX_DENSITY,
        "target": "sparse/dense <= 1.0 at 1-2 % density, sparse trainable params == nnz + bias",
    })


if __name__ == "__main__":
    main()

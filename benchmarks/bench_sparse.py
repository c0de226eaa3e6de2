"""SparseDense costs at the seed-003 size (9 180 inputs -> 230 units, then a 2-class head; Adam):
train step and inference of implementation="sparse" (gather + segment sum over the nnz connections),
"dense" (masked full kernel), "auto", and a plain keras Dense, at several densities and batch sizes, with and
without XLA (Keras compiles without XLA on a CPU-only TensorFlow by default; GPUs and JAX use XLA).

Targets (issue 15): sparse >= 3x faster than plain Dense at <= 2 % density; "auto" never slower than the
dense-masked implementation. The crossover (the density where sparse stops being faster than dense-masked)
is what SparseDense's AUTO_SPARSE_MAX_DENSITY is set from.

All models of one (density, batch, XLA) cell train side by side in one process, in interleaved rounds on the same
data; medians are compared. The sparse implementation holds a (nnz x batch) intermediate: cells where it would
exceed --max-intermediate-gb are skipped and reported as such. Writes results/benchmarks/sparse.json.

    python benchmarks/bench_sparse.py [--densities 0.002,0.005,0.01,0.02,0.1,0.5] [--batches 128,1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import keras
import numpy as np

from common import compiled, median_ms, write_benchmark
from masklab.layers import SparseDense
from masklab.layers import sparse_dense

INPUTS, UNITS = 9180, 230
VARIANTS = ("plain_dense", "dense", "sparse", "auto")


def model_with(variant: str, connectivity, jit: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    hidden = (keras.layers.Dense(UNITS, activation="relu") if variant == "plain_dense" else
              SparseDense(UNITS, connectivity, activation="relu", implementation=variant))
    model = keras.Sequential([keras.Input((INPUTS,)), hidden, keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=jit)
    return model


def step_ms(models: dict, x, y, steps: int, rounds: int) -> dict[str, float]:
    """Median wall-clock ms per train step (``train_on_batch`` on a fixed batch), interleaved round by round."""
    for model in models.values():
        model.train_on_batch(x, y)  # compile
    seconds = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            seconds[name].append((time.perf_counter() - start) / steps)
    return {name: 1000 * statistics.median(s) for name, s in seconds.items()}


def crossover(densities, ratios) -> float | None:
    """Density where sparse/dense crosses 1 (interpolated on log density); None if it never does."""
    for (d0, r0), (d1, r1) in zip(zip(densities, ratios), zip(densities[1:], ratios[1:])):
        if r0 <= 1.0 < r1:
            t = (1.0 - r0) / (r1 - r0)
            return float(math.exp(math.log(d0) + t * (math.log(d1) - math.log(d0))))
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--densities", default="0.002,0.005,0.01,0.02,0.1,0.5")
    parser.add_argument("--batches", default="128,1024")
    parser.add_argument("--steps", type=int, default=3, help="train steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-intermediate-gb", type=float, default=0.5)
    args = parser.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    for density in densities:
        connectivity = rng.random((INPUTS, UNITS)) < density
        nnz = int(connectivity.sum())
        for batch in batches:
            # timing only: random inputs and labels (no accuracy is reported)
            x = rng.normal(size=(batch, INPUTS)).astype(np.float32)
            y = rng.integers(0, 2, batch)
            intermediate_gb = nnz * batch * 4 / 1e9
            too_big = intermediate_gb > args.max_intermediate_gb
            auto_choice = SparseDense(UNITS, connectivity).implementation
            for jit in (False, True):
                variants = [v for v in VARIANTS if not (too_big and (v == "sparse" or (v == "auto" and
                                                                                      auto_choice == "sparse")))]
                models = {v: model_with(v, connectivity, jit) for v in variants}
                train = step_ms(models, x, y, args.steps, args.rounds)
                infer = median_ms({v: compiled(m, xla=jit) for v, m in models.items()}, x, args.rounds)
                row = {"density": density, "nnz": nnz, "batch": batch, "xla": jit, "auto_chooses": auto_choice,
                       "train_step_ms": train, "inference_ms": infer,
                       "skipped": None if not too_big else f"sparse: (nnz x batch) intermediate of "
                                                           f"{intermediate_gb:.1f} GB"}
                for kind, times in (("train", train), ("inference", infer)):
                    if "sparse" in times:
                        row[f"{kind}_sparse_over_dense"] = times["sparse"] / times["dense"]
                        row[f"{kind}_plain_dense_over_sparse"] = times["plain_dense"] / times["sparse"]
                    if "auto" in times:
                        row[f"{kind}_auto_over_dense"] = times["auto"] / times["dense"]
                rows.append(row)
                print(f"density {density:6.1%} nnz {nnz:>7} batch {batch:>5} {'XLA  ' if jit else 'graph'}  train ms: "
                      + ", ".join(f"{v} {t:.2f}" for v, t in train.items())
                      + "  | inference ms: " + ", ".join(f"{v} {t:.2f}" for v, t in infer.items())
                      + (f"  | {row['skipped']}" if too_big else ""), flush=True)
                del models

    crossovers = {}
    for kind in ("train", "inference"):
        for batch in batches:
            for jit in (False, True):
                cell = [r for r in rows if r["batch"] == batch and r["xla"] == jit and f"{kind}_sparse_over_dense" in r]
                crossovers[f"{kind}, batch {batch}, {'XLA' if jit else 'graph'}"] = crossover(
                    [r["density"] for r in cell], [r[f"{kind}_sparse_over_dense"] for r in cell])
    low = [r for r in rows if r["density"] <= 0.02 and "train_plain_dense_over_sparse" in r]
    auto_ratios = [r[k] for r in rows for k in ("train_auto_over_dense", "inference_auto_over_dense") if k in r]
    summary = {
        "crossover_density": crossovers,
        "auto_crossover_density": sparse_dense.AUTO_CROSSOVER_DENSITY,
        "auto_sparse_max_density": sparse_dense.AUTO_SPARSE_MAX_DENSITY,
        "best_speedup_over_plain_dense_at_le_2pct": max((r["train_plain_dense_over_sparse"] for r in low),
                                                        default=None),
        "worst_speedup_over_plain_dense_at_le_2pct": min((r["train_plain_dense_over_sparse"] for r in low),
                                                         default=None),
        "worst_auto_over_dense": max(auto_ratios, default=None),
    }
    print("crossover density (sparse = dense-masked):",
          {k: None if v is None else f"{v:.2%}" for k, v in crossovers.items()})
    print(f"SparseDense auto: crossovers {sparse_dense.AUTO_CROSSOVER_DENSITY}; worst auto/dense "
          f"{summary['worst_auto_over_dense']:.2f}; plain Dense / sparse at <= 2 %: "
          f"{summary['worst_speedup_over_plain_dense_at_le_2pct']:.2f} to "
          f"{summary['best_speedup_over_plain_dense_at_le_2pct']:.2f}")
    write_benchmark("sparse", {
        "shape": [INPUTS, UNITS], "optimizer": "adam", "steps_per_round": args.steps, "rounds": args.rounds,
        "rows": rows, **summary,
        "targets": "sparse >= 3x faster than plain Dense at <= 2 % density; auto never slower than dense-masked",
    })


if __name__ == "__main__":
    main()

"""NSDropout costs, measured side by side in one process:

(1) epoch time of seed 002's 784-128-128-128-10 MLP with NSDropout vs standard Dropout, same data (the embedded
    mnist_5k images, [-1, 1]). Mini-batch training with the per-epoch refresh callback, counted inside the epoch:
    by default the training side's class means are summed in the graph as the steps run (one extra pass, over
    the mask split); ``exact`` also re-runs the training set under the end-of-epoch weights. Full-batch training
    with the in-graph per-step refresh. Target: ratio <= 1.2.
(1b) full-batch steps with a label-free router (notebook 51): the step plus the router's epoch-end work (new
    routes for the training set and the mask split: forward passes, and k-means refits every 10 steps) vs
    standard Dropout's step and vs label routing; measured, no target.
(2) one mask refresh (class means of both sides + top-k masks) for 60 000 x 600 training activations, a
    12 000-row mask split and 10 classes: the compiled in-graph version (segment sums, top_k) vs a NumPy
    one-hot-matmul reference (the issue quotes ~50 ms for NumPy on this machine).

Writes results/benchmarks/nsdropout.json.

    python benchmarks/bench_nsdropout.py [--epochs 6] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from common import EpochTimer, write_benchmark
from masklab import data, models
from masklab.layers import (ClusterRouter, NSDropoutRefresh, NSDropoutRouting, PredictedClassRouter, SingleMaskRouter,
                            class_means, masks_from_differences)


def build(kind: str, refresh: str, mask_classes: int | None = None) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = models.dropout_mlp(784, (128, 128, 128), 10, dropout=kind, rate=0.2, first_layer_l2=5e-4,
                               refresh=refresh, mask_classes=mask_classes, seed=0)
    model.compile(keras.optimizers.Adam(0.001), "sparse_categorical_crossentropy", jit_compile="auto")
    return model


def minibatch_epoch_seconds(kind: str, train, mask, epochs: int, batch_size: int, exact: bool = False) -> list[float]:
    model = build(kind, "epoch")
    timer = EpochTimer()
    callbacks = [timer]
    x, y = train
    inputs = x
    if kind == "nsdropout":
        inputs = [x, y]
        callbacks.insert(0, NSDropoutRefresh(mask, train_data=train if exact else None))  # inside the timed epoch
    model.fit(inputs, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=callbacks)
    return timer.seconds[1:]  # the first epoch includes tracing and compilation


def full_batch_step_seconds(kind: str, train, mask, steps: int) -> tuple[list[float], list[float]]:
    """Seconds per full-batch step, each followed by the epoch-end work of the method (NSDropout: storing the
    mask split's class means, which needs one pass over the mask split), and the seconds of that epoch-end work
    alone (0 for Dropout)."""
    model = build(kind, "step")
    x, y = train
    inputs = [x, y] if kind == "nsdropout" else x
    callback = None
    if kind == "nsdropout":
        callback = NSDropoutRefresh(mask)
        callback.set_model(model)
        callback.on_train_begin()
    seconds, epoch_end = [], []
    for step in range(steps + 1):
        start = time.perf_counter()
        model.train_on_batch(inputs, y)
        trained = time.perf_counter()
        if callback is not None:
            callback.on_epoch_end(step)
        seconds.append(time.perf_counter() - start)
        epoch_end.append(time.perf_counter() - trained)
    return seconds[1:], epoch_end[1:]


ROUTERS = {"predicted_class": (PredictedClassRouter, None), "kmeans": (lambda: ClusterRouter(10, refit_every=10), None),
           "single_mask": (SingleMaskRouter, 1)}


def routed_full_batch_step_seconds(router_name: str, train, mask, steps: int) -> list[float]:
    """Seconds per full-batch step followed by the routing callback's epoch-end work (notebook 51's schedule)."""
    make_router, mask_classes = ROUTERS[router_name]
    model = build("nsdropout", "step", mask_classes)
    routing = NSDropoutRouting(make_router(), train[0], mask[0])
    routing.set_model(model)
    routing.on_train_begin()
    seconds = []
    for step in range(steps + 1):
        start = time.perf_counter()
        model.train_on_batch([train[0], routing.train_routes.astype(np.float32)], train[1])
        routing.on_epoch_end(step)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def numpy_refresh(train_h, train_y, mask_h, mask_y, classes: int, n_drop: int) -> np.ndarray:
    """Reference: one-hot matmuls for the class means, argpartition for the dropped units of every class."""
    def means(h, labels):
        one_hot = np.eye(classes, dtype=h.dtype)[labels]
        return (one_hot.T @ h) / np.maximum(one_hot.sum(0), 1)[:, None]
    difference = means(train_h, train_y) - means(mask_h, mask_y)
    masks = np.ones_like(difference)
    np.put_along_axis(masks, np.argpartition(-difference, n_drop - 1, axis=1)[:, :n_drop], 0.0, axis=1)
    return masks


def refresh_timings(rows: int, units: int, classes: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    train_h = np.maximum(rng.normal(size=(rows, units)), 0).astype(np.float32)
    mask_h = np.maximum(rng.normal(size=(rows // 5, units)), 0).astype(np.float32)
    train_y, mask_y = rng.integers(0, classes, rows), rng.integers(0, classes, rows // 5)
    n_drop = round(units * 0.2)

    import tensorflow as tf  # the compiled version below uses the TensorFlow backend's tf.function

    @tf.function(jit_compile=True)
    def compiled(th, ty, mh, my):
        train_means, _ = class_means(th, ty, classes)
        mask_means, _ = class_means(mh, my, classes)
        return masks_from_differences(train_means - mask_means, n_drop)

    args = [tf.constant(a) for a in (train_h, train_y.astype(np.int32), mask_h, mask_y.astype(np.int32))]
    compiled(*args)  # trace and compile once
    graph_ms, numpy_ms = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        in_graph = compiled(*args).numpy()
        graph_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        reference = numpy_refresh(train_h, train_y, mask_h, mask_y, classes, n_drop)
        numpy_ms.append(1000 * (time.perf_counter() - start))
    return {"train_rows": rows, "mask_rows": rows // 5, "units": units, "classes": classes,
            "in_graph_ms": statistics.median(graph_ms), "numpy_ms": statistics.median(numpy_ms),
            "numpy_over_in_graph": statistics.median(numpy_ms) / statistics.median(graph_ms),
            "masks_equal": bool(np.array_equal(in_graph, reference))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    splits = data.make_splits(data.load("mnist_5k"), seed=0, val_size=1000, test_size=500)
    train = (data.to_inputs(splits.train.x, scale="symmetric"), splits.train.y)
    mask = (data.to_inputs(splits.val.x, scale="symmetric"), splits.val.y)

    minibatch = {"nsdropout": [], "dropout": [], "nsdropout_exact": []}
    full_batch = {"nsdropout": [], "dropout": []}
    mask_split_pass = []
    routed = {}
    for _ in range(args.repeats):  # alternate the two so drifts in machine load hit both
        for kind in ("dropout", "nsdropout"):
            minibatch[kind] += minibatch_epoch_seconds(kind, train, mask, args.epochs, args.batch_size)
            steps, epoch_end = full_batch_step_seconds(kind, train, mask, args.steps)
            full_batch[kind] += steps
            if kind == "nsdropout":
                mask_split_pass += epoch_end
        minibatch["nsdropout_exact"] += minibatch_epoch_seconds("nsdropout", train, mask, args.epochs,
                                                                args.batch_size, exact=True)
        for name in ROUTERS:
            routed.setdefault(name, []).extend(routed_full_batch_step_seconds(name, train, mask, args.steps))
    median = {name: {k: statistics.median(v) for k, v in table.items()}
              for name, table in (("minibatch", minibatch), ("full_batch", full_batch), ("routed", routed))}
    result = {
        "data": f"mnist_5k: {len(train[1])} train images, {len(mask[1])} mask-split images, 784-128-128-128-10",
        "minibatch_epoch_s": median["minibatch"], "full_batch_step_s": median["full_batch"],
        "minibatch_ratio_nsdropout_over_dropout": median["minibatch"]["nsdropout"] / median["minibatch"]["dropout"],
        "minibatch_ratio_exact_refresh_over_dropout": (median["minibatch"]["nsdropout_exact"]
                                                       / median["minibatch"]["dropout"]),
        "full_batch_ratio_nsdropout_over_dropout": median["full_batch"]["nsdropout"] / median["full_batch"]["dropout"],
        # the floor of the original's full-batch schedule: every step is followed by a forward pass over the mask
        # split (its class means under the new weights); the step without it, against Dropout's step
        "full_batch_mask_split_pass_s": statistics.median(mask_split_pass),
        "full_batch_ratio_without_mask_split_pass": ((median["full_batch"]["nsdropout"]
                                                      - statistics.median(mask_split_pass))
                                                     / median["full_batch"]["dropout"]),
        "target_ratio_max": 1.2,
        "routed_full_batch_step_s": median["routed"],
        "routed_ratio_over_dropout": {k: v / median["full_batch"]["dropout"] for k, v in median["routed"].items()},
        "routed_ratio_over_label_routing": {k: v / median["full_batch"]["nsdropout"]
                                            for k, v in median["routed"].items()},
        "refresh_60000x600": refresh_timings(60000, 600, 10, max(5, args.repeats)),
        "batch_size": args.batch_size,
    }
    for name in ("minibatch", "full_batch"):
        ratio = result[f"{name}_ratio_nsdropout_over_dropout"]
        print(f"{name:10s} NSDropout / Dropout time: {ratio:.2f}  (target <= 1.2)  {median[name]}")
    print(f"full batch: the mask-split pass after each step takes {result['full_batch_mask_split_pass_s'] * 1000:.1f} "
          f"ms; the step without it / Dropout: {result['full_batch_ratio_without_mask_split_pass']:.2f}")
    print(f"minibatch with the exact end-of-epoch pass: {result['minibatch_ratio_exact_refresh_over_dropout']:.2f}")
    for name, ratio in result["routed_ratio_over_dropout"].items():
        print(f"full batch, {name} routing: {1000 * median['routed'][name]:.1f} ms per step with its routing work, "
              f"{ratio:.2f}x Dropout, {result['routed_ratio_over_label_routing'][name]:.2f}x label routing")
    refresh = result["refresh_60000x600"]
    print(f"refresh 60000 x 600: in-graph {refresh['in_graph_ms']:.1f} ms, NumPy {refresh['numpy_ms']:.1f} ms, "
          f"same masks: {refresh['masks_equal']}")
    write_benchmark("nsdropout", result)


if __name__ == "__main__":
    main()

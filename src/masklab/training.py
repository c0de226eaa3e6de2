"""The one training function every notebook uses.

``train`` wraps ``keras.Model.fit``: compiled (XLA where the backend supports it) train and eval steps, the GPU
when one is visible, the Keras progress bar, optional TensorBoard logs, and best-epoch selection on the
validation split only, restoring that epoch's weights. It runs on any Keras 3 backend.

Several devices: a ``keras.distribution`` object (``DataParallel`` / ``ModelParallel``) on the JAX backend, over
the devices of one process or of several processes on several hosts (``keras.distribution.initialize``; every
process runs the same script on the same arrays and feeds its share of each global batch, :class:`GlobalBatches`);
or a ``tf.distribute`` strategy (``MirroredStrategy``: the GPUs of one machine) on the TensorFlow backend.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import pandas as pd


@dataclass
class TrainResult:
    """What ``train`` returns. ``history`` has one row per epoch (1-based ``epoch``) and an ``is_best`` flag."""

    model: keras.Model
    history: pd.DataFrame
    best_epoch: int
    best_value: float
    monitor: str
    device: str


def enable_determinism(seed: int) -> None:
    """Seed Python, NumPy and the backend from ``seed``; turn on TensorFlow's deterministic ops."""
    keras.utils.set_random_seed(int(seed))
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class EpochLine(keras.callbacks.Callback):
    """One line per epoch, ``epoch 3/10: loss 0.2104, accuracy 0.9391, val_loss ..., val_accuracy ...``, without
    timings, so an executed notebook shows progress and still comes out the same on every run."""

    def __init__(self, epochs: int, prefix: str = ""):
        super().__init__()
        self.epochs, self.prefix = epochs, prefix

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(f"{name} {float(value):.4f}" for name, value in sorted((logs or {}).items())
                           if name != "learning_rate")
        print(f"{self.prefix}epoch {epoch + 1}/{self.epochs}: {values}", flush=True)


class LiveLogger(keras.callbacks.Callback):
    """Log every epoch's metrics with DVCLive (``dvclive.Live``) into ``folder``: ``plots/metrics/train/<metric>.tsv``
    and ``plots/metrics/eval/<metric>.tsv`` (``val_*``), one row per epoch (``step`` = epoch, from 1), what
    ``dvc plots show`` draws. Its ``metrics.json`` summary holds the last epoch, not the one ``train`` selects.

    DVCLive's own ``dvclive.keras.DVCLiveCallback`` does the same through ``tf.keras`` (TensorFlow only); this one
    is plain Keras 3, so it runs on every backend. No DVC experiment, ``dvc.yaml`` or report is written (the
    pipeline declares the plots itself), and no timestamps, so a rerun writes the same bytes.
    """

    def __init__(self, folder: str | os.PathLike):
        super().__init__()
        from dvclive import Live

        self.live = Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None)

    def on_epoch_end(self, epoch, logs=None):
        from dvclive.utils import standardize_metric_name

        self.live.step = epoch + 1  # 1-based, as in TrainResult.history
        for name, value in sorted((logs or {}).items()):
            if name != "learning_rate":
                self.live.log_metric(standardize_metric_name(name, "dvclive.keras"), float(value))
        self.live.next_step()

    def on_train_end(self, logs=None):
        self.live.end()


class GlobalBatches(keras.utils.PyDataset):
    """``(x, y)`` arrays served in global batches that are the same in every process: epoch ``e`` visits the samples
    in the order of a permutation drawn from ``(seed, e)`` (or in order with ``shuffle=False``), global batch ``b``
    is the ``b``-th run of ``batch_size`` samples of that order, and this process gets block ``process_index`` of
    ``process_count`` equal blocks of it (what ``keras.distribution`` expects of each process when it does not shard
    the data itself). With one process it serves the whole global batches: a single-device run on exactly the
    batches that a multi-process run shares out (how the tests compare them).

    ``x`` is an array or a list / dict of arrays (a multi-input model). A global batch whose size
    ``process_count`` does not divide is refused when the dataset is made, naming it.
    """

    def __init__(self, x, y, batch_size: int, *, shuffle: bool = True, seed: int = 0, process_index: int = 0,
                 process_count: int = 1):
        super().__init__()
        self.x, self.y = x, np.asarray(y)
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.process_index, self.process_count = int(process_index), int(process_count)
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index must lie in [0, process_count={self.process_count}). Received: "
                             f"process_index={process_index!r}")
        self.size = len(self.y)
        for what, size in _batch_sizes(self.size, self.batch_size):
            if size % self.process_count:
                raise ValueError(f"the {what} of {size} samples cannot be shared equally by {self.process_count} "
                                 f"processes. Choose batch_size and the number of samples (received "
                                 f"{self.size}) so that every batch is a multiple of {self.process_count}.")
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __getitem__(self, index: int):
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        share = len(rows) // self.process_count
        rows = rows[self.process_index * share:(self.process_index + 1) * share]
        return keras.tree.map_structure(lambda a: np.asarray(a)[rows], self.x), self.y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._permutation()


def _batch_sizes(size: int, batch_size: int) -> list[tuple[str, int]]:
    """The sizes of the batches ``size`` samples make: ``[("batch", batch_size), ("last batch", rest)]``."""
    sizes = [("batch", min(batch_size, size))]
    if size > batch_size and size % batch_size:
        sizes.append(("last batch", size % batch_size))
    return sizes


def initialize_processes(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """Join a run of ``num_processes`` JAX processes (one per host, or several on one host), before anything else
    touches JAX: ``keras.distribution.initialize`` with ``coordinator_address`` (``"host:port"`` of process 0),
    after selecting Gloo for collectives between CPU devices (JAX has none by default; GPUs use NCCL either way).
    Then ``keras.distribution.list_devices()`` lists the devices of every process and ``train(...,
    distribution=keras.distribution.DataParallel())`` spans them all."""
    if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
        raise ValueError(f"coordinator_address must read 'host:port' (process 0's). Received: "
                         f"coordinator_address={coordinator_address!r}")
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer. Received: {name}={value!r}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must lie in [0, num_processes={num_processes}). Received: "
                         f"process_id={process_id}")
    if keras.config.backend() != "jax":
        raise ValueError(f"several processes need the JAX backend (KERAS_BACKEND=jax). Received: "
                         f"backend={keras.config.backend()!r}")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(job_addresses=coordinator_address, num_processes=int(num_processes),
                                  process_id=int(process_id))


def describe_device() -> str:
    """The accelerator the backend will use, e.g. ``"tensorflow:GPU x1"`` or ``"jax:cpu"``."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"tensorflow:GPU x{len(gpus)}" if gpus else "tensorflow:CPU"
    if backend == "jax":
        import jax

        devices = jax.devices()
        processes = f" ({jax.process_count()} processes)" if jax.process_count() > 1 else ""
        return f"jax:{devices[0].platform} x{len(devices)}{processes}"
    if backend == "torch":
        import torch

        return f"torch:cuda x{torch.cuda.device_count()}" if torch.cuda.is_available() else "torch:cpu"
    return backend


def train(
    model: keras.Model | Callable[[], keras.Model],
    train_data: tuple[np.ndarray, np.ndarray],
    val_data: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    optimizer: str | keras.optimizers.Optimizer | Callable[[], keras.optimizers.Optimizer] = "adam",
    learning_rate: float | None = 1e-3,
    loss: str | keras.losses.Loss = "sparse_categorical_crossentropy",
    metrics: tuple = ("accuracy",),
    monitor: str = "val_accuracy",
    restore_best: bool = True,
    jit_compile: bool | str = "auto",
    steps_per_execution: int | None = None,
    strategy=None,
    distribution=None,
    log_dir: str | os.PathLike | None = None,
    live_dir: str | os.PathLike | None = None,
    callbacks: tuple = (),
    verbose: int | str = "auto",
) -> TrainResult:
    """Train ``model`` on ``train_data`` and select the epoch on ``val_data`` alone.

    Args:
        model: a zero-argument function building the model (preferred: its initial weights then come from
            ``seed``; required with ``strategy`` or ``distribution``, so that variables are created inside its
            scope), or a built model. An uncompiled model is compiled here with
            ``optimizer`` / ``learning_rate`` / ``loss`` / ``metrics`` / ``jit_compile`` /
            ``steps_per_execution``; a compiled one is kept.
        train_data, val_data: ``(x, y)`` with ``x`` an array, or a list / dict of arrays for a multi-input
            model; labels are integer classes in [0, outputs) for the default loss. Checked before training
            (lengths, NaN / infinite values, labels). A ``tf.data.Dataset`` or a generator of ``(x, y)`` batches
            is passed to ``fit`` as is (batch it yourself; ``batch_size`` is then unused).
        epochs, batch_size, seed: all randomness (initial weights built here, shuffling, dropout) comes from
            ``seed``; with the TensorFlow backend ops are deterministic, so two CPU runs give equal numbers.
        monitor: a ``val_*`` metric; the test split never reaches this function.
        restore_best: put back the weights of the best epoch (ties: the earliest) when training ends.
        steps_per_execution: train steps per compiled call (Keras' ``compile`` argument): the same updates in the
            same order, with less Python overhead per step (about 20 % faster for the seeds' small MLPs on CPU).
            ``None``: 32, or 1 with a ``strategy`` (Keras 3.15's multi-step loop fails under MirroredStrategy).
        strategy: a ``tf.distribute`` strategy (TensorFlow backend only), e.g. ``MirroredStrategy`` for the GPUs
            of one machine.
        distribution: a ``keras.distribution`` object (JAX backend only), e.g. ``DataParallel()`` over every
            device of every process: variables are laid out by it and each global batch of ``batch_size`` is
            split over the devices of its batch axis (so every batch, the last one included, must be a multiple
            of their number: checked here). With several processes (``keras.distribution.initialize``), every
            process calls ``train`` with the same arguments and arrays; each feeds its share of every global
            batch (:class:`GlobalBatches`, shuffled from ``seed``), and only process 0 writes ``log_dir`` /
            ``live_dir``. A ``tf.data.Dataset`` is sharded by Keras; another stream must yield this process's
            share.
        log_dir: write TensorBoard logs there.
        live_dir: log each epoch's metrics there with DVCLive (:class:`LiveLogger`), for ``dvc plots``.
        verbose: passed to ``fit`` (``"auto"``/1 progress bar, 2 one line per epoch, 0 silent), or ``"epoch"``:
            one line per epoch without timings (:class:`EpochLine`; what the pipeline's notebooks use).
    """
    if not isinstance(monitor, str) or not monitor.startswith("val_"):
        raise ValueError(f"Epoch selection must use the validation split: monitor must be a 'val_*' metric name. "
                         f"Received: monitor={monitor!r}")
    if steps_per_execution is None:
        steps_per_execution = 32 if strategy is None else 1
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed),
                        ("steps_per_execution", steps_per_execution)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "seed" else 1):
            raise ValueError(f"{name} must be {'a non-negative' if name == 'seed' else 'a positive'} integer. "
                             f"Received: {name}={value!r}")
    if learning_rate is not None and (isinstance(learning_rate, bool) or
                                      not isinstance(learning_rate, (int, float, np.floating)) or
                                      not np.isfinite(learning_rate) or learning_rate <= 0):
        raise ValueError(f"learning_rate must be a positive finite number (or None to keep the optimizer's). "
                         f"Received: learning_rate={learning_rate!r}")
    train_data, val_data = _check_data(train_data, "train_data"), _check_data(val_data, "val_data")
    if strategy is not None:
        if keras.config.backend() != "tensorflow":
            raise ValueError(f"A tf.distribute strategy needs the TensorFlow backend. "
                             f"Received: backend={keras.config.backend()!r}")
        if isinstance(model, keras.Model):
            raise ValueError("With a strategy, pass a function that builds the model so its variables are "
                             "created inside strategy.scope(). Received: a built keras.Model")
    sharded = False
    if distribution is not None:
        train_data, val_data, sharded = _distributed_data(distribution, model, train_data, val_data, batch_size,
                                                          seed, strategy)

    enable_determinism(seed)
    scope = strategy.scope() if strategy is not None else \
        distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        if not isinstance(model, keras.Model):
            model = model()
        if not model.compiled:
            model.compile(optimizer=_make_optimizer(optimizer, learning_rate), loss=loss,
                          metrics=list(metrics), jit_compile=jit_compile, steps_per_execution=steps_per_execution)

    if loss == "sparse_categorical_crossentropy" and len(getattr(model, "outputs", None) or []) == 1:
        for what, data in (("train_data", train_data), ("val_data", val_data)):
            _check_class_labels(data, int(model.outputs[0].shape[-1]), what)
    # Keras' EarlyStopping with a patience it never reaches: it only tracks the best epoch (ties: the earliest)
    # and restores its weights when training ends.
    best = keras.callbacks.EarlyStopping(monitor=monitor, mode="min" if "loss" in monitor else "max",
                                         patience=epochs + 1, restore_best_weights=restore_best)
    all_callbacks = [best, keras.callbacks.TerminateOnNaN(), *callbacks]
    if verbose == "epoch":
        all_callbacks.append(EpochLine(epochs))
        verbose = 0
    writer = _process_index() == 0  # with several processes only the first writes logs
    if log_dir is not None and writer:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir)))
    if live_dir is not None and writer:
        all_callbacks.append(LiveLogger(live_dir))
    streamed = _is_stream(train_data)
    auto_shard = getattr(distribution, "auto_shard_dataset", None)
    try:
        if sharded:  # this process feeds its own share of each global batch: Keras must not shard it again
            distribution.auto_shard_dataset = False
        with distribution.scope() if distribution is not None else contextlib.nullcontext():
            fit_history = model.fit(
                *((train_data,) if streamed else train_data), validation_data=val_data, epochs=epochs,
                batch_size=None if streamed else batch_size, shuffle=not streamed, callbacks=all_callbacks,
                verbose=verbose,
            )
    finally:
        if sharded:
            distribution.auto_shard_dataset = auto_shard
    history = pd.DataFrame(fit_history.history)
    diverged = np.flatnonzero(~np.isfinite(history.to_numpy(dtype=float)).all(axis=1))
    if len(diverged):
        raise ValueError(f"training diverged: the loss or a metric is NaN or infinite at epoch {diverged[0] + 1} "
                         f"(training stopped there). Causes: NaN / infinite inputs, a learning rate too high, or "
                         f"invalid values reaching a NeuronMask (outside [0, 1]) or an NSDropout (a class outside "
                         f"[-1, num_classes) or not an integer), which make their samples NaN on purpose.")
    if monitor not in history:
        raise ValueError(f"monitor {monitor!r} is not among the metrics fit logged: {sorted(history)}. Received: "
                         f"monitor={monitor!r}")
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    best_epoch = best.best_epoch + 1
    history["is_best"] = history["epoch"] == best_epoch
    return TrainResult(model, history, best_epoch, float(best.best), monitor, describe_device())


def _process_index() -> int:
    if keras.config.backend() == "jax":
        import jax

        return jax.process_index()
    return 0


def _distributed_data(distribution, model, train_data, val_data, batch_size: int, seed: int, strategy):
    """Check a ``keras.distribution`` run and, with several processes, give each process its share of the arrays
    (:class:`GlobalBatches`). Returns ``(train_data, val_data, sharded)``."""
    if not all(hasattr(distribution, name) for name in ("device_mesh", "scope", "distribute_dataset")):
        raise ValueError(f"distribution must be a keras.distribution object, e.g. keras.distribution.DataParallel()"
                         f". Received: distribution of type {type(distribution).__name__}")
    if keras.config.backend() != "jax":
        raise ValueError(f"training with a keras.distribution needs the JAX backend (KERAS_BACKEND=jax); on "
                         f"TensorFlow pass strategy=tf.distribute.MirroredStrategy() for the GPUs of one machine. "
                         f"Received: backend={keras.config.backend()!r}")
    if strategy is not None:
        raise ValueError("pass either strategy (tf.distribute) or distribution (keras.distribution), not both. "
                         f"Received: strategy={strategy!r}, distribution={distribution!r}")
    if isinstance(model, keras.Model):
        raise ValueError("With a distribution, pass a function that builds the model so its variables are created "
                         "inside distribution.scope() and laid out by it. Received: a built keras.Model")
    import jax

    mesh = distribution.device_mesh
    batch_axis = getattr(distribution, "batch_dim_name", None) or mesh.axis_names[0]
    replicas = int(mesh.shape[list(mesh.axis_names).index(batch_axis)])
    processes = jax.process_count()
    sharded = processes > 1
    for what, data in (("train_data", train_data), ("val_data", val_data)):
        if _is_stream(data):
            continue
        for which, size in _batch_sizes(len(data[1]), batch_size):
            if size % replicas:
                raise ValueError(f"{what}: the {which} holds {size} samples, which the {replicas} devices of the "
                                 f"distribution's batch axis {batch_axis!r} cannot share equally. Choose batch_size "
                                 f"and the number of samples (received {len(data[1])}) so that every batch is a "
                                 f"multiple of {replicas}. Received: batch_size={batch_size}")
    if sharded:
        index = jax.process_index()
        train_data = train_data if _is_stream(train_data) else \
            GlobalBatches(*train_data, batch_size, seed=seed, process_index=index, process_count=processes)
        val_data = val_data if _is_stream(val_data) else \
            GlobalBatches(*val_data, batch_size, shuffle=False, process_index=index, process_count=processes)
    return train_data, val_data, sharded


def _check_data(data, what: str):
    """``(x, y)`` with x an array, a list / tuple / dict of arrays (a multi-input model) as long as y, finite; or
    a ``tf.data.Dataset`` / generator yielding ``(x, y)`` batches, passed to ``fit`` as is (not inspected)."""
    if _is_stream(data):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{what} must be (x, y), or a tf.data.Dataset / generator of (x, y) batches. "
                         f"Received: {what} of type {type(data).__name__}")
    x, y = data
    inputs = list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, (list, tuple)) else [x]
    if not inputs or any(not hasattr(a, "__len__") for a in inputs) or not hasattr(y, "__len__"):
        raise ValueError(f"{what} must hold arrays. Received: x of type {type(x).__name__}, y of type "
                         f"{type(y).__name__}")
    lengths = {len(a) for a in inputs}
    if len(lengths) != 1 or len(y) != next(iter(lengths)) or len(y) == 0:
        raise ValueError(f"{what} needs as many labels as inputs, at least one (every input array as long). "
                         f"Received: inputs of lengths {sorted(lengths)}, {len(y)} labels")
    for name, array in [*(("x", a) for a in inputs), ("y", y)]:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"{what} {name} contains NaN or infinite values "
                             f"({int((~np.isfinite(array)).sum())} of {array.size})")
    return data


def _is_stream(data) -> bool:
    import inspect

    module = type(data).__module__
    return inspect.isgenerator(data) or module.startswith("tensorflow") or isinstance(data, keras.utils.PyDataset)


def _check_class_labels(data, num_classes: int, what: str) -> None:
    """Integer class labels in [0, num_classes) for the sparse categorical loss (float labels would be
    truncated and labels >= classes fail deep inside the compiled step)."""
    if _is_stream(data):
        return
    y = np.asarray(data[1])
    if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise ValueError(f"{what} labels must be integer classes of shape (n,) for the sparse categorical loss. "
                         f"Received: shape {y.shape} (one-hot labels need loss='categorical_crossentropy')")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and
                                                    np.array_equal(y, np.round(y)))):
        raise ValueError(f"{what} labels must be integer classes. Received: dtype {y.dtype}, e.g. "
                         f"{y.reshape(-1)[:5].tolist()}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what} labels must lie in [0, {num_classes}) for a model with {num_classes} outputs. "
                         f"Received: min {y.min()}, max {y.max()}")


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``(x, y)`` as plain floats (call it once on the test split)."""
    return {k: float(v) for k, v in model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True).items()}


def recalibrate_batchnorm(model: keras.Model, x, batch_size: int = 256) -> int:
    """Re-estimate every BatchNormalization layer's moving mean and variance on ``x`` (training data), weights
    untouched: forward passes in training mode whose momentum is set so that the moving statistics end as the
    average over the batches of each batch's mean and variance. Needed after pruning a BatchNorm network, whose
    stored statistics describe the unpruned one. Returns the number of layers recalibrated."""
    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    if len(x) == 0 or batch_size < 1:
        raise ValueError(f"recalibrate_batchnorm needs data and a positive batch_size. Received: {len(x)} "
                         f"samples, batch_size={batch_size}")
    momenta = [layer.momentum for layer in layers]
    try:
        for step, start in enumerate(range(0, len(x), batch_size)):
            for layer in layers:
                layer.momentum = step / (step + 1)   # running average of the batch statistics
            model(x[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _make_optimizer(optimizer, learning_rate):
    if callable(optimizer) and not isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer()
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
        if learning_rate is not None:
            optimizer.learning_rate = learning_rate
    return optimizer


"""Shared by the benchmark scripts: a timing callback, interleaved call timing and the JSON writer."""

from __future__ import annotations

import platform
import statistics
import time

import keras

from masklab import paths, records, training


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch (training plus the validation pass)."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def write_benchmark(name: str, result: dict) -> None:
    result = {**result, "machine": {"platform": platform.platform(), "processor": platform.machine(),
                                    "device": training.describe_device(), "keras": keras.__version__,
                                    "backend": keras.config.backend()}}
    path = records.write_json(result, paths.RESULTS_DIR / "benchmarks" / f"{name}.json")
    print(f"wrote {path}")


def compiled(model: keras.Model, xla: bool = False):
    """One compiled inference function for ``model`` (a model or a single layer; TensorFlow backend), without Keras's predict loop: a
    ``tf.function`` graph (oneDNN kernels on CPU), or with ``xla=True`` an XLA-compiled one. Measured side by
    side, because XLA on CPU is much slower than the plain graph for some models (e.g. ResNet50 at 64x64:
    about 950 ms vs 145 ms per batch of 32 here)."""
    import tensorflow as tf

    if isinstance(model, keras.Model):
        return tf.function(lambda x: model(x, training=False), jit_compile=xla)
    return tf.function(lambda x: model(x), jit_compile=xla)  # a single layer


def median_ms(functions: dict, x, rounds: int) -> dict[str, float]:
    """Median wall-clock milliseconds per call of each function on ``x``. Calls are interleaved round by round so
    that machine drift hits every variant alike; the first call of each (compilation) is not timed."""
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)  # converted once: the timed calls measure the model, not the copy of the input

    def run(fn):
        out = fn(x)
        return out.numpy() if hasattr(out, "numpy") else out

    for fn in functions.values():
        run(fn)
    seconds = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            run(fn)
            seconds[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(s) for name, s in seconds.items()}

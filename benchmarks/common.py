"""Shared by the benchmark scripts: a timing callback and the JSON writer."""

from __future__ import annotations

import platform
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

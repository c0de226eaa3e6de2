"""Splits: stratified, disjoint, deterministic; test never in train or val; fingerprints identify samples."""

import hashlib

import numpy as np
import pytest

from conftest import random_image_set
from masklab import data


@pytest.fixture(scope="module")
def mnist_5k():
    return data.load("mnist_5k")


def official_like(rng):
    x_train, y_train, x_test, y_test = random_image_set(rng, 1000, 200)
    return data.Dataset("mnist", x_train[..., None], y_train.astype(np.int64), x_test[..., None],
                        y_test.astype(np.int64), source="test")


def test_mnist_5k_splits_are_disjoint_stratified_and_cover_the_pool(mnist_5k):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    idx = {s.name: set(s.indices.tolist()) for s in (splits.train, splits.val, splits.test)}
    assert not idx["train"] & idx["val"] and not idx["train"] & idx["test"] and not idx["val"] & idx["test"]
    assert idx["train"] | idx["val"] | idx["test"] == set(range(5000))
    # 500 per class in the sample -> exactly 100 per class in test, 40 in val (by hand: 1000/10, 500/10 ... of 400)
    np.testing.assert_array_equal(np.bincount(splits.test.y), [100] * 10)
    np.testing.assert_array_equal(np.bincount(splits.val.y), [50] * 10)
    # the arrays are the samples the indices name
    np.testing.assert_array_equal(splits.val.x, mnist_5k.x_train[splits.val.indices])
    np.testing.assert_array_equal(splits.test.y, mnist_5k.y_train[splits.test.indices])


def test_official_test_set_is_the_test_split_and_never_in_train_or_val(rng):
    ds = official_like(rng)
    splits = data.make_splits(ds, seed=3, val_size=0.1)
    assert splits.test.pool == "test" and splits.train.pool == splits.val.pool == "train"
    np.testing.assert_array_equal(splits.test.x, ds.x_test)
    assert len(splits.val) == 100 and len(splits.train) == 900
    assert not set(splits.train.indices) & set(splits.val.indices)


def test_stratification_follows_unbalanced_class_proportions():
    labels = np.repeat(np.arange(3), [600, 300, 100])
    rest, taken = data.stratified_indices(labels, 100, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[taken]), [60, 30, 10])
    assert len(np.intersect1d(rest, taken)) == 0 and len(rest) + len(taken) == 1000


def test_same_seed_same_split_other_seed_other_split(mnist_5k):
    a = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    b = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    c = data.make_splits(mnist_5k, seed=1, val_size=500, test_size=1000)
    assert a.summary() == b.summary()
    assert a.train.fingerprint != c.train.fingerprint and a.test.fingerprint != c.test.fingerprint


def test_changing_val_size_keeps_the_test_split(mnist_5k):
    a = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    b = data.make_splits(mnist_5k, seed=0, val_size=800, test_size=1000)
    assert a.test.fingerprint == b.test.fingerprint and a.val.fingerprint != b.val.fingerprint


def test_fingerprint_is_a_hash_of_the_sorted_indices(mnist_5k):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    by_hand = hashlib.sha256(b"mnist_5k:train:" + np.sort(splits.val.indices).astype("<i8").tobytes())
    assert splits.val.fingerprint == by_hand.hexdigest()[:16]


def test_train_size_subsamples_the_remaining_pool(mnist_5k):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000, train_size=1000)
    np.testing.assert_array_equal(np.bincount(splits.train.y), [100] * 10)


def test_carve_gives_a_disjoint_stratified_part(mnist_5k):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    rest, mask_split = data.carve(splits.train, 700, seed=5, name="mask")
    assert mask_split.name == "mask" and len(mask_split) == 700 and len(rest) == len(splits.train) - 700
    assert not set(rest.indices) & set(mask_split.indices)
    np.testing.assert_array_equal(np.bincount(mask_split.y), [70] * 10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_size=0, test_size=1000), "val_size=0"),
    (dict(val_size=1.5, test_size=1000), "val_size=1.5"),
    (dict(val_size="10%", test_size=1000), "val_size='10%'"),
    (dict(val_size=500, test_size=None), "test_size=None"),
    (dict(val_size=500, test_size=5000), "test_size=5000"),
])
def test_bad_sizes_say_what_was_received(mnist_5k, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.make_splits(mnist_5k, seed=0, **kwargs)


def test_test_size_refused_when_an_official_test_set_exists(rng):
    with pytest.raises(ValueError, match="official test set.*test_size=100"):
        data.make_splits(official_like(rng), seed=0, val_size=100, test_size=100)


def test_save_and_load_splits_round_trip(mnist_5k, tmp_path):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    data.save_splits(splits, tmp_path / "mnist_5k.npz")
    loaded = data.load_splits("mnist_5k", tmp_path)
    assert loaded.summary() == splits.summary()
    np.testing.assert_array_equal(loaded.test.x, splits.test.x)


def test_tampered_prepared_file_is_detected(mnist_5k, tmp_path):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    data.save_splits(splits, tmp_path / "mnist_5k.npz")
    with np.load(tmp_path / "mnist_5k.npz") as f:
        arrays = dict(f)
    arrays["idx_test"] = arrays["idx_test"][::-1] + 1
    np.savez(tmp_path / "mnist_5k.npz", **arrays)
    with pytest.raises(data.CorruptDataError, match="test fingerprint"):
        data.load_splits("mnist_5k", tmp_path)


def test_missing_prepared_file_says_how_to_make_it(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="dvc repro prepare@mnist_5k"):
        data.load_splits("mnist_5k", tmp_path)

"""Splits: stratified, disjoint, deterministic; test never in train or val; fingerprints identify samples and
their content; prepared files are checked when read back; `python -m masklab prepare` and its params."""

import hashlib
import json
import math

import numpy as np
import pytest

from conftest import random_image_set
from masklab import __main__ as cli
from masklab import data, paths

pytestmark = pytest.mark.backend_independent  # computes nothing with Keras: runs once (conftest.py)


@pytest.fixture(scope="module")
def mnist_5k():
    return data.load("mnist_5k")


@pytest.fixture(scope="module")
def mnist_5k_splits(mnist_5k):
    return data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)


def official_like(rng):
    x_train, y_train, x_test, y_test = random_image_set(rng, 1000, 200)
    return data.Dataset("mnist", x_train[..., None], y_train.astype(np.int64), x_test[..., None],
                        y_test.astype(np.int64), source="test")


def fingerprint_by_hand(dataset, pool, indices, x, y):
    """The documented definition, written out independently of masklab."""
    order = np.argsort(indices, kind="stable")
    digest = hashlib.sha256(f"{dataset}:{pool}:".encode())
    digest.update(np.asarray(indices)[order].astype("<i8").tobytes())
    for tag, array in (("x", np.asarray(x)), ("y", np.asarray(y))):
        rows = np.ascontiguousarray(array[order])
        digest.update(f"{tag}:{rows.dtype.str}:{list(rows.shape)}:".encode())
        digest.update(rows.tobytes())
    return digest.hexdigest()[:16]


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


# -------------------------------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_a_hash_of_the_sorted_indices_and_the_content(mnist_5k_splits):
    for split in (mnist_5k_splits.train, mnist_5k_splits.val, mnist_5k_splits.test):
        assert split.fingerprint == fingerprint_by_hand("mnist_5k", "train", split.indices, split.x, split.y)
    assert set(mnist_5k_splits.summary()["fingerprints"].values()) == {
        s.fingerprint for s in (mnist_5k_splits.train, mnist_5k_splits.val, mnist_5k_splits.test)}
    assert len({s.fingerprint for s in (mnist_5k_splits.train, mnist_5k_splits.val, mnist_5k_splits.test)}) == 3


def test_fingerprint_follows_content_not_row_order(mnist_5k_splits):
    val = mnist_5k_splits.val
    reference = val.fingerprint
    shuffled = np.random.default_rng(0).permutation(len(val))
    same = data.Split("val", val.x[shuffled], val.y[shuffled], "train", val.indices[shuffled], "mnist_5k")
    assert same.fingerprint == reference  # the same samples in another order
    x = val.x.copy()
    x[7, 3, 4, 0] ^= 1
    y = val.y.copy()
    y[7] = (y[7] + 1) % 10
    changed = {
        "pixel": (val.x, x, val.y, val.indices, "train", "mnist_5k"),
        "label": (val.x, val.x, y, val.indices, "train", "mnist_5k"),
        "reshaped images": (val.x, val.x.reshape(len(val), 28 * 28), val.y, val.indices, "train", "mnist_5k"),
        "label dtype": (val.x, val.x, val.y.astype(np.int32), val.indices, "train", "mnist_5k"),
        "indices": (val.x, val.x, val.y, val.indices + 1, "train", "mnist_5k"),
        "pool": (val.x, val.x, val.y, val.indices, "test", "mnist_5k"),
        "dataset": (val.x, val.x, val.y, val.indices, "train", "mnist"),
    }
    for what, (_, x_, y_, idx, pool, dataset) in changed.items():
        other = data.Split("val", x_, y_, pool, idx, dataset)
        assert other.fingerprint != reference, what
        assert other.fingerprint == fingerprint_by_hand(dataset, pool, idx, x_, y_), what


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(y=np.zeros(3, np.int64)), ValueError, r"one row per sample.*y of shape \(3,\)"),
    (dict(indices=np.arange(5)), ValueError, r"indices of shape \(5,\)"),
    (dict(indices=np.arange(4.0)), TypeError, "indices must be a 1-D integer array"),
    (dict(indices=np.zeros((4, 1), int)), TypeError, "indices must be a 1-D integer array"),
    (dict(pool="val"), ValueError, "Received: pool='val'"),
    (dict(dataset="toy"), ValueError, "Received: dataset='toy'"),
    (dict(name=""), ValueError, "Received: name=''"),
    (dict(x=None), TypeError, "Received: x=None"),
])
def test_split_constructor_bad_parts(kwargs, error, match):
    parts = dict(name="train", x=np.zeros((4, 28, 28, 1), np.uint8), y=np.zeros(4, np.int64), pool="train",
                 indices=np.arange(4), dataset="mnist_5k")
    with pytest.raises(error, match=match):
        data.Split(**{**parts, **kwargs})


def test_splits_refuse_overlapping_parts(mnist_5k_splits):
    s = mnist_5k_splits
    leaky_test = data.Split("test", s.val.x, s.val.y, "train", s.val.indices, "mnist_5k")
    with pytest.raises(ValueError, match="val and test share 500 samples of the train pool"):
        data.Splits("mnist_5k", s.train, s.val, leaky_test, s.source, s.seed)
    with pytest.raises(TypeError, match="Received: seed=None"):
        data.Splits("mnist_5k", s.train, s.val, s.test, s.source, None)
    with pytest.raises(ValueError, match="val must be the mnist_5k split named 'val'"):
        data.Splits("mnist_5k", s.train, s.test, s.val, s.source, s.seed)


def test_train_size_subsamples_the_remaining_pool(mnist_5k):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000, train_size=1000)
    np.testing.assert_array_equal(np.bincount(splits.train.y), [100] * 10)


def test_carve_gives_a_disjoint_stratified_part(mnist_5k):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    rest, mask_split = data.carve(splits.train, 700, seed=5, name="mask")
    assert mask_split.name == "mask" and len(mask_split) == 700 and len(rest) == len(splits.train) - 700
    assert not set(rest.indices) & set(mask_split.indices)
    np.testing.assert_array_equal(np.bincount(mask_split.y), [70] * 10)


# ------------------------------------------------------------------------------------------------- bad inputs

SIZE_CASES = [  # (value, error, match); "{what}" is the parameter's name
    (0, ValueError, "{what}=0"),
    (-5, ValueError, "{what}=-5"),
    (1.0, ValueError, r"to take a count, pass an int.*fraction below 1. Received: {what}=1.0"),
    (1.5, ValueError, "{what}=1.5"),
    (0.0, ValueError, "strictly between 0 and 1. Received: {what}=0.0"),
    (-0.1, ValueError, "{what}=-0.1"),
    (math.nan, ValueError, "{what}=nan"),
    (math.inf, ValueError, "{what}=inf"),
    (1e-9, ValueError, r"{what}=1e-09 \(0 samples\)"),
    (True, TypeError, "{what}=True"),
    (np.bool_(True), TypeError, "{what}=.*True"),
    ("10%", TypeError, "{what}='10%'"),
    ("500", TypeError, "{what}='500'"),
    ([500], TypeError, r"{what}=\[500\]"),
]


@pytest.mark.parametrize("value, error, match", SIZE_CASES + [
    (None, TypeError, "val_size=None"),
    (4000, ValueError, "pool of 4000.*val_size=4000"),  # what test_size leaves: nothing for train
])
def test_bad_val_size_says_what_was_received(mnist_5k, value, error, match):
    with pytest.raises(error, match=match.format(what="val_size")):
        data.make_splits(mnist_5k, seed=0, val_size=value, test_size=1000)


@pytest.mark.parametrize("value, error, match", SIZE_CASES + [
    (None, ValueError, "no official test set; give test_size.*test_size=None"),
    (5000, ValueError, "test_size=5000"),
])
def test_bad_test_size_says_what_was_received(mnist_5k, value, error, match):
    with pytest.raises(error, match=match.format(what="test_size")):
        data.make_splits(mnist_5k, seed=0, val_size=500, test_size=value)


@pytest.mark.parametrize("value, error, match", SIZE_CASES + [(3500, ValueError, "train_size=3500")])
def test_bad_train_size_says_what_was_received(mnist_5k, value, error, match):
    with pytest.raises(error, match=match.format(what="train_size")):
        data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000, train_size=value)


@pytest.mark.parametrize("value, error, match", SIZE_CASES + [(None, TypeError, "{what}=None")])
def test_bad_carve_size_says_what_was_received(mnist_5k_splits, value, error, match):
    with pytest.raises(error, match=match.format(what="mask size")):
        data.carve(mnist_5k_splits.train, value, seed=0, name="mask")


SEED_CASES = [
    (None, TypeError, "Received: seed=None"),
    (-1, ValueError, "Received: seed=-1"),
    (True, TypeError, "Received: seed=True"),
    (1.0, TypeError, "Received: seed=1.0"),
    (np.float64(2), TypeError, r"Received: seed=.*2\.0"),
    ("0", TypeError, "Received: seed='0'"),
    ([0], TypeError, r"Received: seed=\[0\]"),
]


@pytest.mark.parametrize("seed, error, match", SEED_CASES)
def test_make_splits_refuses_seeds_that_are_not_non_negative_ints(mnist_5k, seed, error, match):
    with pytest.raises(error, match=match):
        data.make_splits(mnist_5k, seed=seed, val_size=500, test_size=1000)


@pytest.mark.parametrize("seed, error, match", SEED_CASES)
def test_carve_and_stratified_indices_refuse_bad_seeds(mnist_5k_splits, seed, error, match):
    with pytest.raises(error, match=match):
        data.carve(mnist_5k_splits.train, 100, seed=seed, name="mask")
    with pytest.raises(error, match=match):
        data.stratified_indices(mnist_5k_splits.train.y, 100, seed=seed)


def test_numpy_int_seeds_are_ints(mnist_5k):
    a = data.make_splits(mnist_5k, seed=np.int64(4), val_size=500, test_size=1000)
    b = data.make_splits(mnist_5k, seed=4, val_size=500, test_size=1000)
    assert a.summary() == b.summary() and type(a.seed) is int


@pytest.mark.parametrize("labels, error, match", [
    (None, TypeError, "Received: labels=None"),
    (np.zeros((10, 2), np.int64), TypeError, r"shape \(10, 2\)"),
    (np.arange(10.0), TypeError, "dtype float64"),
    (np.array([], np.int64), ValueError, "at least 2 samples"),
    ("0123456789", TypeError, "Received: labels='0123456789'"),
])
def test_stratified_indices_bad_labels(labels, error, match):
    with pytest.raises(error, match=match):
        data.stratified_indices(labels, 2, seed=0)


@pytest.mark.parametrize("split, name, error, match", [
    ("train", "train", ValueError, "must differ .*Received: name='train'"),
    ("train", "", ValueError, "Received: name=''"),
    ("train", None, ValueError, "Received: name=None"),
    (None, "mask", TypeError, "Received: split=None"),
    ("array", "mask", TypeError, "Received: split=array of dtype uint8"),
])
def test_carve_bad_arguments(mnist_5k_splits, split, name, error, match):
    split = {"train": mnist_5k_splits.train, "array": mnist_5k_splits.train.x, None: None}[split]
    with pytest.raises(error, match=match):
        data.carve(split, 100, seed=0, name=name)


@pytest.mark.parametrize("dataset, error, match", [
    (None, TypeError, "Received: dataset=None"),
    ("mnist_5k", TypeError, "Received: dataset='mnist_5k'"),
])
def test_make_splits_needs_a_dataset(dataset, error, match):
    with pytest.raises(error, match=match):
        data.make_splits(dataset, seed=0, val_size=500, test_size=1000)


def test_test_size_refused_when_an_official_test_set_exists(rng):
    with pytest.raises(ValueError, match="official test set.*test_size=100"):
        data.make_splits(official_like(rng), seed=0, val_size=100, test_size=100)


# ------------------------------------------------------------------------------------------ prepared npz files


def test_save_and_load_splits_round_trip(mnist_5k, tmp_path):
    splits = data.make_splits(mnist_5k, seed=0, val_size=500, test_size=1000)
    data.save_splits(splits, tmp_path / "mnist_5k.npz")
    loaded = data.load_splits("mnist_5k", tmp_path)
    assert loaded.summary() == splits.summary()
    np.testing.assert_array_equal(loaded.test.x, splits.test.x)
    with np.load(tmp_path / "mnist_5k.npz") as f:
        header = json.loads(str(f["header"]))
    assert header["fingerprints"] == splits.summary()["fingerprints"] and header["format"] == 2


def test_official_test_pool_round_trip(rng, tmp_path, small_official_sizes, monkeypatch):
    monkeypatch.setattr(data, "OFFICIAL_SIZES", {**data.OFFICIAL_SIZES, "mnist": (1000, 200)})
    splits = data.make_splits(official_like(rng), seed=0, val_size=100)
    data.save_splits(splits, tmp_path / "mnist.npz")
    assert data.load_splits("mnist", tmp_path).summary() == splits.summary()


def test_saving_twice_gives_the_same_bytes(mnist_5k_splits, tmp_path):
    data.save_splits(mnist_5k_splits, tmp_path / "a" / "mnist_5k.npz")
    data.save_splits(mnist_5k_splits, tmp_path / "b" / "mnist_5k.npz")
    assert (tmp_path / "a" / "mnist_5k.npz").read_bytes() == (tmp_path / "b" / "mnist_5k.npz").read_bytes()


@pytest.mark.parametrize("splits, path, error, match", [
    ("dict", "mnist_5k.npz", TypeError, "Received: splits=\\{"),
    ("splits", "mnist_5k.npy", ValueError, "path must end in .npz. Received: path='.*mnist_5k.npy'"),
    ("splits", None, TypeError, "Received: path=None"),
])
def test_save_splits_bad_arguments(mnist_5k_splits, tmp_path, splits, path, error, match):
    splits = mnist_5k_splits if splits == "splits" else mnist_5k_splits.summary()
    with pytest.raises(error, match=match):
        data.save_splits(splits, None if path is None else tmp_path / path)


def rewrite(path, header_keys=None, **arrays):
    """Replace arrays (and header keys; None deletes one) of a prepared file, keeping everything else."""
    with np.load(path) as f:
        content = dict(f)
    if header_keys is not None:
        parsed = json.loads(str(content["header"]))
        for key, value in header_keys.items():
            if value is None:
                parsed.pop(key)
            else:
                parsed[key] = value
        content["header"] = np.array(json.dumps(parsed))
    for key, value in arrays.items():
        if value is None:
            content.pop(key)
        else:
            content[key] = value
    np.savez(path, **content)


def tamper(path, problem, splits):
    """Damage a prepared mnist_5k file in one way; returns what the error must say."""
    s = splits
    if problem == "changed pixel":
        x = s.train.x.copy()
        x[10, 14, 14, 0] ^= 1
        rewrite(path, x_train=x)
        return r"train fingerprint .* does not match the recorded .*content changed"
    if problem == "flipped label":
        y = s.val.y.copy()
        y[3] = (y[3] + 1) % 10
        rewrite(path, y_val=y)
        return "val fingerprint .* does not match"
    if problem == "reversed and shifted indices":
        rewrite(path, idx_test=(s.test.indices[::-1] + 1) % 5000)
        return "test fingerprint"
    if problem == "test copied from train":  # arrays and header rewritten consistently: only disjointness fails
        x, y, idx = s.train.x[:1000], s.train.y[:1000], s.train.indices[:1000]
        fingerprints = {**s.summary()["fingerprints"], "test": fingerprint_by_hand("mnist_5k", "train", idx, x, y)}
        rewrite(path, header_keys={"fingerprints": fingerprints}, x_test=x, y_test=y, idx_test=idx)
        return "train and test share 1000 samples of the train pool"
    if problem == "val overlapping train":
        idx = s.val.indices.copy()
        idx[0] = s.train.indices[0]
        x, y = s.val.x.copy(), s.val.y.copy()
        x[0], y[0] = s.train.x[0], s.train.y[0]
        fingerprints = {**s.summary()["fingerprints"], "val": fingerprint_by_hand("mnist_5k", "train", idx, x, y)}
        rewrite(path, header_keys={"fingerprints": fingerprints}, x_val=x, y_val=y, idx_val=idx)
        return f"train and val share 1 samples of the train pool \\(first index {s.train.indices[0]}\\)"
    if problem == "duplicate index":
        idx, x, y = s.val.indices.copy(), s.val.x.copy(), s.val.y.copy()
        idx[1], x[1], y[1] = idx[0], x[0], y[0]
        fingerprints = {**s.summary()["fingerprints"], "val": fingerprint_by_hand("mnist_5k", "train", idx, x, y)}
        rewrite(path, header_keys={"fingerprints": fingerprints}, x_val=x, y_val=y, idx_val=idx)
        return "val holds some sample of the train pool more than once"
    if problem == "fewer labels than images":
        rewrite(path, y_train=s.train.y[:-1])
        return "train has 3500 images, 3499 labels and 3500 indices"
    if problem == "fewer indices":
        rewrite(path, idx_val=s.val.indices[:-1])
        return "val has 500 images, 500 labels and 499 indices"
    if problem == "index outside the pool":
        idx = s.test.indices.copy()
        idx[-1] = 5000
        rewrite(path, idx_test=idx)
        return r"test indices range over \[.*, 5000\], outside the train pool of 5000"
    if problem == "label out of range":
        y = s.test.y.copy()
        y[0] = 10
        rewrite(path, y_test=y)
        return r"test labels range over \[0, 10\]"
    if problem == "float images":
        rewrite(path, x_val=s.val.x.astype(np.float32))
        return "val images are array of dtype float32"
    if problem == "flattened images":
        rewrite(path, x_val=s.val.x.reshape(500, -1))
        return r"val images .*shape \(500, 784\)"
    if problem == "missing array":
        rewrite(path, idx_train=None)
        return r"missing arrays \['idx_train'\]"
    if problem == "missing header":
        rewrite(path, header=None)
        return r"missing arrays \['header'\]"
    if problem == "header not JSON":
        rewrite(path, header=np.array("{not json"))
        return "header is not valid JSON"
    if problem == "header not an object":
        rewrite(path, header=np.array("[1, 2]"))
        return "header is list, expected a JSON object"
    if problem == "header not a string":
        rewrite(path, header=np.arange(3))
        return "header is array of dtype int64"
    if problem == "old format":
        rewrite(path, header_keys={"format": None})
        return "header format None, expected 2.*older masklab.*prepare@mnist_5k"
    if problem == "header lacks fingerprints":
        rewrite(path, header_keys={"fingerprints": None})
        return r"header lacks \['fingerprints'\]"
    if problem == "other dataset":
        rewrite(path, header_keys={"dataset": "mnist"})
        return "holds 'mnist', not 'mnist_5k'"
    if problem == "wrong pool":
        rewrite(path, header_keys={"pools": {"train": "train", "val": "train", "test": "test"}})
        return "header pools are"
    if problem == "bad seed":
        rewrite(path, header_keys={"seed": -3})
        return "header seed is -3"
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[:-5000])
        return "not a readable npz file"
    if problem == "not a zip":
        path.write_bytes(b"\x93NUMPY" + b"\x00" * 100)
        return "not a readable npz file"
    if problem == "damaged member":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        return r"not a readable npz file \(BadZipFile: Bad CRC-32"
    raise AssertionError(problem)


PROBLEMS = ["changed pixel", "flipped label", "reversed and shifted indices", "test copied from train",
            "val overlapping train", "duplicate index", "fewer labels than images", "fewer indices",
            "index outside the pool", "label out of range", "float images", "flattened images", "missing array",
            "missing header", "header not JSON", "header not an object", "header not a string", "old format",
            "header lacks fingerprints", "other dataset", "wrong pool", "bad seed", "truncated", "not a zip",
            "damaged member"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_damaged_prepared_file_is_refused_naming_path_and_problem(mnist_5k_splits, tmp_path, problem):
    path = data.save_splits(mnist_5k_splits, tmp_path / "mnist_5k.npz")
    match = tamper(path, problem, mnist_5k_splits)
    with pytest.raises(data.CorruptDataError, match=match) as info:
        data.load_splits("mnist_5k", tmp_path)
    assert str(path) in str(info.value)


def test_missing_prepared_file_says_how_to_make_it(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="dvc repro prepare@mnist_5k"):
        data.load_splits("mnist_5k", tmp_path)


@pytest.mark.parametrize("dataset, data_dir, error, match", [
    ("mnist10", None, ValueError, "Received: dataset='mnist10'"),
    (None, None, ValueError, "Received: dataset=None"),
    ("mnist_5k", 3, TypeError, "Received: data_dir=3"),
    ("mnist_5k", "", ValueError, "Received: data_dir=''"),
])
def test_load_splits_bad_arguments(dataset, data_dir, error, match):
    with pytest.raises(error, match=match):
        data.load_splits(dataset, data_dir)


# ------------------------------------------------------------------------------------- python -m masklab prepare


MNIST_5K_PARAMS = "data:\n  mnist_5k:\n    seed: 0\n    test_size: 1000\n    val_size: 500\n"


def test_prepare_twice_writes_the_same_bytes_and_the_params_splits(tmp_path, mnist_5k_splits, capsys):
    (tmp_path / "params.yaml").write_text(MNIST_5K_PARAMS)
    first = cli.prepare("mnist_5k", tmp_path / "params.yaml", tmp_path / "one")
    second = cli.prepare("mnist_5k", tmp_path / "params.yaml", tmp_path / "two")
    assert first == tmp_path / "one" / "mnist_5k.npz" and first.read_bytes() == second.read_bytes()
    assert data.load_splits("mnist_5k", tmp_path / "one").summary() == mnist_5k_splits.summary()
    assert "fingerprints" in capsys.readouterr().out


@pytest.mark.parametrize("params, match", [
    ("baseline:\n  epochs: 1\n", r"params.yaml: missing key data \(.*present: \['baseline'\]"),
    ("data:\n  mnist:\n    seed: 0\n    val_size: 5\n",
     r"params.yaml: missing key data.mnist_5k .*present: \['mnist'\]"),
    ("data:\n  mnist_5k:\n    test_size: 1000\n    val_size: 500\n", "params.yaml: missing key data.mnist_5k.seed$"),
    ("data:\n  mnist_5k:\n    seed: 0\n    test_size: 1000\n", "missing key data.mnist_5k.val_size$"),
    ("data:\n  mnist_5k:\n    seed: 0\n    val_size: 500\n", "missing key data.mnist_5k.test_size$"),
    ("data:\n  mnist_5k:\n    val_size: 500\n", "missing keys data.mnist_5k.seed, data.mnist_5k.test_size$"),
    (MNIST_5K_PARAMS + "    val_sise: 5\n", r"unknown key data.mnist_5k.val_sise; expected some of"),
    (MNIST_5K_PARAMS + "    verify: no-thanks\n", "data.mnist_5k.verify must be true or false. "
                                                  "Received: verify='no-thanks'"),
    ("data:\n  mnist_5k:\n    seed: -1\n    test_size: 1000\n    val_size: 500\n",
     "params.yaml: data.mnist_5k: seed must be a non-negative int. Received: seed=-1"),
    ("data:\n  mnist_5k:\n    seed: 0\n    test_size: 1000\n    val_size: 1.0\n",
     "params.yaml: data.mnist_5k: .*Received: val_size=1.0"),
    ("data:\n  mnist_5k:\n    seed: 0\n    test_size: '10%'\n    val_size: 500\n",
     "params.yaml: data.mnist_5k: .*Received: test_size='10%'"),
    ("data:\n  mnist_5k: [1, 2]\n", "data.mnist_5k must be a mapping"),
    ("data: 3\n", "data must be a mapping"),
    ("- 1\n- 2\n", "the top level must be a mapping"),
    ("data: {mnist_5k: [\n", "cannot be read as YAML"),
    ("", "the top level must be a mapping"),
])
def test_prepare_names_the_params_key_and_file(tmp_path, params, match):
    (tmp_path / "params.yaml").write_text(params)
    with pytest.raises(cli.ParamsError, match=match) as info:
        cli.prepare("mnist_5k", tmp_path / "params.yaml", tmp_path / "out")
    assert str(tmp_path / "params.yaml") in str(info.value)
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_test_size_for_an_official_test_set(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  mnist:\n    seed: 0\n    val_size: 5\n    test_size: 5\n")
    with pytest.raises(cli.ParamsError, match="data.mnist.test_size must be absent.*Received: test_size=5"):
        cli.prepare("mnist", tmp_path / "params.yaml")


@pytest.mark.parametrize("dataset, params_file, error, match", [
    ("mnist10", "params.yaml", ValueError, "Received: dataset='mnist10'"),
    ("mnist_5k", "missing.yaml", cli.ParamsError, "does not exist. Received: params_file='.*missing.yaml'"),
    ("mnist_5k", 3, TypeError, "Received: params_file=3"),
])
def test_prepare_bad_arguments(tmp_path, dataset, params_file, error, match):
    (tmp_path / "params.yaml").write_text(MNIST_5K_PARAMS)
    with pytest.raises(error, match=match):
        cli.prepare(dataset, tmp_path / params_file if isinstance(params_file, str) else params_file, tmp_path)


def test_command_line_refuses_an_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["prepare", "mnist10"])
    assert info.value.code == 2
    assert "invalid choice: 'mnist10'" in capsys.readouterr().err


def test_command_line_reports_params_errors_without_a_traceback(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("data:\n  mnist:\n    seed: 0\n")
    monkeypatch.setattr(paths, "PARAMS_FILE", tmp_path / "params.yaml")
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    assert cli.main(["prepare", "mnist_5k"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m masklab prepare: error: ") and "missing key data.mnist_5k" in err
    (tmp_path / "params.yaml").write_text(MNIST_5K_PARAMS)
    assert cli.main(["prepare", "mnist_5k"]) == 0
    assert (tmp_path / "data" / "mnist_5k.npz").is_file()


def test_stratified_indices_is_scikit_learns_split():
    """The split is scikit-learn's ``train_test_split(stratify=...)``, drawn from the seed (not a hand-made one)."""
    from sklearn.model_selection import train_test_split

    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    rest, taken = data.stratified_indices(labels, 20, seed=7)
    by_hand_rest, by_hand_taken = train_test_split(np.arange(100), test_size=20, stratify=labels,
                                                   random_state=np.random.RandomState(np.random.MT19937(7)))
    np.testing.assert_array_equal(taken, np.sort(by_hand_taken))
    np.testing.assert_array_equal(rest, np.sort(by_hand_rest))


@pytest.mark.parametrize("labels, size, match", [
    (np.array([0, 0, 0, 1]), 2, "class 1 has 1"),
    (np.repeat(np.arange(5), 4), 3, r"each of the 5 classes .*Received: size=3"),
    (np.repeat(np.arange(5), 4), 18, r"\[5, 15\].*Received: size=18"),
])
def test_stratified_indices_refuses_splits_that_cannot_hold_every_class(labels, size, match):
    with pytest.raises(ValueError, match=match):
        data.stratified_indices(labels, size, seed=0)

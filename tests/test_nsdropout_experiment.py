"""The NSDropout experiment's splits, mask-dependence matrix and error table, checked by hand."""

import numpy as np
import pytest

from masklab import data, models
from masklab.experiments import nsdropout as steps


@pytest.fixture(scope="module")
def splits():
    return data.make_splits(data.load("mnist_5k"), seed=0, val_size=500, test_size=1000)


def test_original_splits_follow_the_original_recipe(splits):
    parts = steps.original_splits(splits, pool_size=10000, mask_fraction=0.2, baseline_selection=0.8)
    # mnist_5k's training pool is 4 000 images (1 000 are held out as test): all of them, 80 / 20
    assert (len(parts["train"]), len(parts["mask"]), len(parts["selection"])) == (3200, 800, 640)
    assert np.intersect1d(parts["train"].indices, parts["mask"].indices).size == 0
    np.testing.assert_array_equal(parts["selection"].indices, parts["mask"].indices[:640])
    assert parts["test"] is splits.test
    pool = np.concatenate([splits.train.indices, splits.val.indices])
    assert np.isin(parts["train"].indices, pool).all() and np.isin(parts["mask"].indices, pool).all()
    # the order is np.random.RandomState(22) applied to the training pool in its published order
    expected_first = np.sort(pool)[np.random.RandomState(22).permutation(len(pool))[:3200]]
    np.testing.assert_array_equal(parts["train"].indices, expected_first)
    for split in ("train", "mask"):  # images and labels travel with their indices
        np.testing.assert_array_equal(parts[split].y, data.load("mnist_5k").y_train[parts[split].indices])


def test_corrected_splits_are_disjoint_and_never_touch_val_or_test(splits):
    parts = steps.corrected_splits(splits, pool_size=10000, mask_fraction=0.2, seed=0)
    assert (len(parts["train"]), len(parts["mask"])) == (2800, 700)
    assert parts["val"] is splits.val and parts["test"] is splits.test
    train_pool = [parts["train"].indices, parts["mask"].indices, parts["val"].indices]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.intersect1d(train_pool[i], train_pool[j]).size == 0
    assert np.bincount(parts["mask"].y).tolist() == [70] * 10  # stratified: 20 % of each class
    smaller = steps.corrected_splits(splits, pool_size=1000, mask_fraction=0.2, seed=0)
    assert (len(smaller["train"]), len(smaller["mask"])) == (800, 200)
    summary = steps.split_summary(parts)
    assert summary["mask"]["size"] == 700 and len(summary["mask"]["fingerprint"]) == 16


def test_split_summary_refuses_overlapping_splits(splits):
    parts = steps.corrected_splits(splits, pool_size=10000, mask_fraction=0.2, seed=0)
    parts["val"] = parts["mask"]
    with pytest.raises(ValueError, match="share samples"):
        steps.split_summary(parts)


def test_the_monitor_refuses_to_select_on_test():
    with pytest.raises(ValueError, match="test split never selects"):
        steps.AccuracyMonitor({}, selection_split="test", selection_modes=("none",))


def test_mask_dependence_matrix_by_hand():
    rng = np.random.default_rng(0)
    model = models.dropout_mlp(8, (12, 6), 3, rate=0.25)
    model.get_layer("dropout").set_class_masks((rng.random((3, 12)) > 0.25).astype("float32"))
    x = rng.normal(size=(90, 8)).astype("float32") * 2
    y = np.arange(90) % 3
    matrix, summary = steps.mask_dependence(model, x, y)
    predictor_per_mask = [model.predict([x, np.full(90, k)], verbose=0).argmax(-1) for k in range(3)]
    expected = np.array([[np.mean(predictor_per_mask[k][y == j] == k) for j in range(3)] for k in range(3)])
    np.testing.assert_allclose(matrix, expected)
    wrong = [predictor_per_mask[k][n] == k for k in range(3) for n in range(90) if y[n] != k]
    assert summary["follow_rate"] == pytest.approx(np.mean(wrong))
    assert summary["own_mask_accuracy"] == pytest.approx(np.mean([predictor_per_mask[y[n]][n] == y[n]
                                                                  for n in range(90)]))


def test_random_class_masks_drop_exactly_the_rate():
    masks = steps.random_class_masks(10, 128, 0.2, seed=3)
    assert masks.shape == (10, 128) and ((masks == 0).sum(axis=1) == 26).all()
    assert len({row.tobytes() for row in masks}) == 10
    np.testing.assert_array_equal(masks, steps.random_class_masks(10, 128, 0.2, seed=3))


def test_error_table_in_the_readme_format():
    metrics = {"original": {"standard_dropout": {"accuracy": {steps.STANDARD: 0.9441}},
                            "nsdropout": {"accuracy": {"oracle": 1.0}}},
               "corrected": {"standard_dropout": {"mean": 0.95, "std": 0.004, "per_seed": [0.946, 0.95, 0.954]},
                             "nsdropout": {m: {"mean": 0.2, "std": 0.01} for m in steps.LABEL_FREE_MODES}}}
    lines = steps.error_table(metrics, "mnist_5k").splitlines()
    assert lines[0] == "| test error % (1 - accuracy) | mnist_5k |"
    assert lines[2] == "| Standard dropout, original protocol | 5.59 |"
    assert lines[3].endswith("| 0.00 |")
    assert lines[4] == "| Standard dropout, corrected protocol (3 seeds) | 5.00 ± 0.40 |"
    assert lines[5] == "| NSDropout, corrected protocol, inference `none` (3 seeds) | 80.00 ± 1.00 |"
    assert len(lines) == 8

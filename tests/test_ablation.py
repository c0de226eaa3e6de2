"""Batched ablation against K separate masked predictions and a NumPy forward pass."""

import keras
import numpy as np
import pytest

from masklab import ablation, models
from masklab.layers import keep_mask

UNITS = 16


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = models.mlp(10, UNITS, 4)
    # make the network non-trivial: train a few steps on a learnable problem
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 10)).astype("float32")
    y = np.argmax(x[:, :4], axis=1)
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=5, verbose=0)
    return m


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 10)).astype("float32")
    return x, np.argmax(x[:, :4], axis=1)


def numpy_forward(model, x, keep):
    w1, b1, w2, b2 = model.get_weights()
    z = (np.maximum(x @ w1 + b1, 0) * keep) @ w2 + b2
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_predict_with_masks_equals_k_separate_masked_predictions(model, data):
    x, _ = data
    masks = (np.random.default_rng(2).random((7, UNITS)) > 0.4).astype("float32")
    batched = ablation.predict_with_masks(model, "hidden_1", x, masks, batch_size=64)  # forces several chunks
    assert batched.shape == (7, 50, 4)
    for k in range(7):
        np.testing.assert_allclose(batched[k], numpy_forward(model, x, masks[k]), rtol=1e-5, atol=1e-6)


def test_with_mask_input_routes_one_mask_per_sample(model, data):
    x, _ = data
    masks = (np.random.default_rng(3).random((50, UNITS)) > 0.5).astype("float32")
    masked = ablation.with_mask_input(model, "hidden_1")
    np.testing.assert_allclose(masked.predict([x, masks], verbose=0), numpy_forward(model, x, masks), rtol=1e-5,
                               atol=1e-6)


def test_masks_from_scores_switches_off_the_highest_scores():
    scores = np.array([0.1, 5.0, 3.0, 3.0, -1.0])
    masks = ablation.masks_from_scores(scores, [0.0, 0.2, 0.6, 1.0])
    np.testing.assert_array_equal(masks, [[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 0, 0, 0, 1], [0, 0, 0, 0, 0]])


def test_unit_scores_by_hand(model, data):
    x, _ = data
    w1, b1, _, _ = model.get_weights()
    mean_act = np.maximum(x @ w1 + b1, 0).mean(0)
    np.testing.assert_allclose(ablation.unit_scores(model, "hidden_1", "lowest_activation", x), -mean_act,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ablation.unit_scores(model, "hidden_1", "smallest_weight_norm"),
                               -np.linalg.norm(w1, axis=0), rtol=1e-6)
    perm = ablation.unit_scores(model, "hidden_1", "random", seed=4)
    assert sorted(perm) == list(range(UNITS))


def test_ablation_curve_matches_a_hand_computed_accuracy(model, data):
    x, y = data
    reference = np.random.default_rng(9).normal(size=(80, 10)).astype("float32")
    table = ablation.ablation_curve(model, "hidden_1", x, y, [0.0, 0.25, 0.5], repeats=3, seed=0,
                                    reference_x=reference)
    assert len(table) == 3 * (3 + 3)  # random x 3 repeats + 3 deterministic strategies, 3 fractions each
    w1, b1, _, _ = model.get_weights()
    mean_act = np.maximum(reference @ w1 + b1, 0).mean(0)
    off = np.argsort(-mean_act, kind="stable")[:4]  # highest_activation, 25 % of 16
    expected = np.mean(numpy_forward(model, x, keep_mask(UNITS, off)).argmax(1) == y)
    row = table[(table.strategy == "highest_activation") & (table.fraction == 0.25)].iloc[0]
    assert row.n_off == 4 and row.accuracy == pytest.approx(expected)
    full = np.mean(numpy_forward(model, x, np.ones(UNITS)).argmax(1) == y)
    np.testing.assert_allclose(table[table.fraction == 0.0].accuracy, full)
    assert (table[table.fraction == 0.0].agreement == 1.0).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(strategies=["loudest"]), "loudest"),
    (dict(fractions=[1.2]), r"\[1.2\]"),
    (dict(strategies=["lowest_activation"]), "reference_x"),
    (dict(repeats=0), "repeats=0"),
])
def test_ablation_curve_refuses_bad_input(model, data, kwargs, match):
    x, y = data
    args = dict(fractions=[0.5], strategies=["random"], repeats=1)
    with pytest.raises(ValueError, match=match):
        ablation.ablation_curve(model, "hidden_1", x, y, **{**args, **kwargs})


def test_unknown_layer_and_non_vector_layer_are_refused(model):
    with pytest.raises(ValueError, match="(?i)no layer named .hidden_9.*hidden_1"):
        ablation.split_model(model, "hidden_9")
    conv = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, name="c"), keras.layers.Flatten(),
                             keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"output shape \(None, 4, 4, 2\)"):
        ablation.split_model(conv, "c")

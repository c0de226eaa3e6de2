"""Invalid values inside compiled calls (predict, fit, jit): Python never sees them, so the layers turn the
affected samples into NaN instead of a plausible wrong answer, and masklab's training loop stops with a clear
error. The valid samples of the same batch are computed exactly as by hand (NumPy)."""

import keras
import numpy as np
import pytest
from backend_tools import gradients

from masklab import models, training
from masklab.layers import NeuronMask, NSDropout


def mask_model(seed=0):
    keras.utils.set_random_seed(seed)
    x, masks = keras.Input((5,)), keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(x)
    return keras.Model([x, masks], keras.layers.Dense(2, name="out")(NeuronMask(name="mask")([hidden, masks])))


def by_hand(model, x, masks):
    w1, b1 = model.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("out").get_weights()
    return (np.maximum(x @ w1 + b1, 0) * masks) @ w2 + b2


@pytest.mark.parametrize("bad_value", [2.0, -1.0, np.nan, np.inf])
@pytest.mark.parametrize("jit", [False, True])
def test_an_invalid_neuron_mask_row_gives_nan_for_that_sample_only(bad_value, jit):
    model = mask_model()
    model.compile(jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype("float32")
    masks = rng.integers(0, 2, size=(6, 4)).astype("float32")
    masks[2, 1] = bad_value
    if not jit and keras.config.backend() == "jax":  # JAX runs predict eagerly without jit: Python checks and says
        with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]|contains NaN"):
            model.predict([x, masks], verbose=0, batch_size=6)
        return
    out = model.predict([x, masks], verbose=0, batch_size=6)
    assert np.isnan(out[2]).all()
    valid = np.arange(6) != 2
    np.testing.assert_allclose(out[valid], by_hand(model, x[valid], masks[valid]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]|contains NaN"):
        model([x, masks])  # an eager call checks in Python and says so


def dropout_model(num_classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    return models.dropout_mlp(6, (5,), num_classes, dropout="nsdropout", rate=0.4, refresh="never", seed=seed)


@pytest.mark.parametrize("bad_class", [3, 7, -2, -5, 1.7, np.nan])
def test_an_invalid_nsdropout_class_gives_nan_inside_predict_and_the_others_are_exact(bad_class):
    model = dropout_model()
    layer = model.get_layer("dropout")
    masks = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 0, 1, 1]], "float32")
    layer.set_class_masks(masks)
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    classes = np.array([0, 1, 2, -1, bad_class], dtype="float32")
    out = model.predict([x, classes], verbose=0, batch_size=5)
    assert np.isnan(out[4]).all()
    w1, b1 = model.get_layer("hidden_1").get_weights()
    w2, b2 = model.get_layer("output").get_weights()
    keep = np.vstack([masks / (1 - 0.4), np.ones((1, 5))])[[0, 1, 2, 3]]  # class -1: no mask
    logits = (np.maximum(x[:4] @ w1 + b1, 0) * keep) @ w2 + b2
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out[:4], expected, rtol=1e-5, atol=1e-6)


def test_fit_with_an_invalid_class_stops_with_a_clear_error():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(32, 6)).astype("float32"), np.arange(32) % 3
    routes = y.astype("float32")
    routes[5] = 7  # a class the layer does not have
    with pytest.raises(ValueError, match=r"training diverged.*NSDropout \(a class outside \[-1, num_classes\)"):
        training.train(dropout_model, ([x, routes], y), ([x, y.astype("float32")], y), epochs=2, batch_size=8,
                       verbose=0)


def test_training_accepts_a_two_input_model_and_refuses_bad_labels():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 6)).astype("float32"), np.arange(30) % 3
    result = training.train(dropout_model, ([x, y.astype("float32")], y), ([x, y.astype("float32")], y), epochs=1,
                            batch_size=10, verbose=0)
    assert result.best_epoch == 1
    for labels, message in ((y + 0.5, r"integer classes"), (y + 1, r"labels must lie in \[0, 3\)")):
        with pytest.raises(ValueError, match=message):
            training.train(dropout_model, ([x, y.astype("float32")], labels), ([x, y.astype("float32")], y),
                           epochs=1, verbose=0)


def test_the_checks_can_be_measured_off_and_then_let_wrong_values_through():
    """The class-level switch exists for the benchmark; with it off a wrong class silently picks a mask."""
    model = dropout_model()
    model.get_layer("dropout").set_class_masks(np.ones((3, 5), "float32"))
    x = np.ones((1, 6), "float32")
    NSDropout.check_values = False
    try:
        assert np.isfinite(model.predict([x, np.array([7.0], "float32")], verbose=0)).all()
    finally:
        NSDropout.check_values = True
    model = dropout_model()  # the switch is read when a call is traced: a new model traces anew
    model.get_layer("dropout").set_class_masks(np.ones((3, 5), "float32"))
    assert np.isnan(model.predict([x, np.array([7.0], "float32")], verbose=0)).all()


def test_the_mask_check_leaves_gradients_through_a_learned_mask_finite():
    """The value check must not add a gradient: masks exactly 0 or 1 (where the check's square root has an
    infinite slope) still give finite gradients, equal to those of the plain product."""
    h = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    gates = np.array([[0, 1, 0.5, 1, 0]] * 4, np.float32)
    layer = NeuronMask()
    _, (grad, _) = gradients(lambda gate_values, values: keras.ops.sum(layer([values, gate_values]) ** 2),
                             inputs=[gates, h])
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, 2 * h ** 2 * gates, rtol=1e-6)

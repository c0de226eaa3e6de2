"""NeuronMask against a NumPy forward pass computed by hand from the weights."""

import keras
import numpy as np
import pytest
from backend_tools import compiled, to_numpy

from masklab.layers import NeuronMask, dropped_units, keep_from_off, keep_mask, keep_masks

UNITS = 12


def relu(z):
    return np.maximum(z, 0)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_forward(weights, x, keep):
    """784-style MLP by hand: relu(x W1 + b1) * keep, then softmax(h W2 + b2). keep: (units,) or (N, units)."""
    w1, b1, w2, b2 = weights
    return softmax((relu(x @ w1 + b1) * keep) @ w2 + b2)


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def sequential_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(UNITS, activation="relu", name="hidden"),
                             NeuronMask(name="mask"), keras.layers.Dense(4, activation="softmax", name="out")])


def functional_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((8,))
    m = keras.Input((UNITS,))
    h = keras.layers.Dense(UNITS, activation="relu", name="hidden")(x)
    out = keras.layers.Dense(4, activation="softmax", name="out")(NeuronMask(name="mask")([h, m]))
    return keras.Model([x, m], out)


def dense_weights(model):
    h, o = model.get_layer("hidden"), model.get_layer("out")
    return [np.asarray(v) for v in (h.kernel, h.bias, o.kernel, o.bias)]


def test_per_sample_masks_as_a_second_input(rng):
    model = functional_model()
    x = rng.normal(size=(6, 8)).astype("float32")
    masks = (rng.random((6, UNITS)) > 0.5).astype("float32")
    np.testing.assert_allclose(model.predict([x, masks], verbose=0), numpy_forward(dense_weights(model), x, masks),
                               rtol=1e-5, atol=1e-6)


def test_one_shared_mask_broadcasts_over_the_batch(rng):
    model = functional_model()
    x = rng.normal(size=(6, 8)).astype("float32")
    shared = keep_mask(UNITS, drop=[0, 3, 7])[None, :]
    np.testing.assert_allclose(model([x, shared]), numpy_forward(dense_weights(model), x, shared[0]),
                               rtol=1e-5, atol=1e-6)


def test_set_mask_takes_effect_without_retracing(rng):
    model = sequential_model()
    x = rng.normal(size=(5, 8)).astype("float32")
    traces = []

    def traced(inputs):
        traces.append(1)
        return model(inputs, training=False)

    forward = compiled(traced, model.variables, jit_compile=False)

    layer = model.get_layer("mask")
    weights = dense_weights(model)
    for drop in ([], [1, 2], list(range(UNITS - 1))):
        layer.set_mask(keep_mask(UNITS, drop))
        np.testing.assert_allclose(to_numpy(forward(x)), numpy_forward(weights, x, keep_mask(UNITS, drop)), rtol=1e-5,
                                   atol=1e-6)
    assert len(traces) == 1
    layer.clear_mask()
    np.testing.assert_allclose(model(x), numpy_forward(weights, x, np.ones(UNITS)), rtol=1e-5, atol=1e-6)


def test_mask_is_active_in_training_mode_too(rng):
    model = sequential_model()
    model.get_layer("mask").set_mask(keep_mask(UNITS, range(6)))
    x = rng.normal(size=(3, 8)).astype("float32")
    np.testing.assert_allclose(model(x, training=True), numpy_forward(dense_weights(model), x,
                                                                      keep_mask(UNITS, range(6))), rtol=1e-5)


def test_soft_values_scale_units(rng):
    model = sequential_model()
    soft = np.linspace(0, 1, UNITS).astype("float32")
    model.get_layer("mask").set_mask(soft)
    x = rng.normal(size=(3, 8)).astype("float32")
    np.testing.assert_allclose(model(x), numpy_forward(dense_weights(model), x, soft), rtol=1e-5, atol=1e-6)


def test_masking_before_a_sigmoid_does_not_switch_the_unit_off(rng):
    x = rng.normal(size=(4, 8)).astype("float32")
    dense = keras.layers.Dense(UNITS)
    off = keep_mask(UNITS, drop=[2])
    before = keras.activations.sigmoid(NeuronMask(initial_mask=off)(dense(x)))
    after = NeuronMask(initial_mask=off)(keras.activations.sigmoid(dense(x)))
    np.testing.assert_allclose(np.asarray(before)[:, 2], 0.5)  # masked pre-activation: still 0.5
    np.testing.assert_array_equal(np.asarray(after)[:, 2], 0.0)  # masked after the activation: off


def test_masks_channels_of_conv_feature_maps(rng):
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    masks = np.array([[1, 0, 1], [0, 1, 1]], "float32")
    out = np.asarray(NeuronMask()([x, masks]))
    np.testing.assert_array_equal(out, x * masks[:, None, None, :])


def test_index_helpers():
    np.testing.assert_array_equal(keep_mask(5, drop=[1, 4]), [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(keep_masks(3, [[0], [], [1, 2]]), [[0, 1, 1], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(keep_from_off([0, 0, 1, 0, 1]), [1, 1, 0, 1, 0])  # the seed's 1 = off
    np.testing.assert_array_equal(dropped_units(keep_mask(6, [5, 0])), [0, 5])


@pytest.mark.parametrize("call, match", [
    (lambda: keep_mask(5, drop=[5]), r"\[0, 5\).*\[5\]"),
    (lambda: keep_mask(5, drop=[-1]), r"out of range: \[-1\]"),
    (lambda: keep_mask(5, drop=[1, 1]), r"duplicates: \[1\]"),
    (lambda: keep_mask(5, drop=[0.5]), "integer unit indices"),
    (lambda: keep_mask(0), "units=0"),
    (lambda: keep_from_off([0, 2]), "only 0 and 1"),
])
def test_helpers_refuse_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("mask, match", [
    (np.ones((2, 2, UNITS)), r"shape \(batch, 12\) or \(1, 12\). Received: mask shape \(2, 2, 12\)"),
    (np.ones((1, UNITS + 1)), r"Received: mask shape \(1, 13\)"),
    (np.full((1, UNITS), np.nan), "NaN"),
    (np.full((1, UNITS), 1.5), "max=1.5"),
    (np.full((1, UNITS), -0.1), "min=-0.1"),
    (np.ones((3, UNITS)), "3 rows for a batch of 4"),
    (np.ones(UNITS), r"Received: mask shape \(12,\)"),
])
def test_bad_mask_inputs_are_refused(rng, mask, match):
    x = rng.normal(size=(4, UNITS)).astype("float32")
    with pytest.raises(ValueError, match=match):
        NeuronMask()([x, mask.astype("float32")])


def test_set_mask_refuses_bad_masks():
    layer = sequential_model().get_layer("mask")
    with pytest.raises(ValueError, match="has 3 units but the layer has 12"):
        layer.set_mask(np.ones(3))
    with pytest.raises(ValueError, match="2 rows for a batch of 1"):
        layer.set_mask(np.ones((2, UNITS)))
    with pytest.raises(ValueError, match="not built yet"):
        NeuronMask().set_mask(np.ones(3))


def test_symbolic_mask_input_of_wrong_width_fails_at_build():
    with pytest.raises(ValueError, match=r"mask shape \(None, 5\)"):
        NeuronMask()([keras.Input((UNITS,)), keras.Input((5,))])


def test_save_and_load_keeps_the_stored_mask_and_outputs(rng, tmp_path):
    model = sequential_model()
    model.get_layer("mask").set_mask(keep_mask(UNITS, [0, 5, 9]))
    x = rng.normal(size=(4, 8)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("mask"), NeuronMask)
    np.testing.assert_array_equal(loaded(x), model(x))
    np.testing.assert_array_equal(np.asarray(loaded.get_layer("mask").stored_mask), keep_mask(UNITS, [0, 5, 9]))


def test_functional_model_with_mask_input_round_trips(rng, tmp_path):
    model = functional_model()
    x = rng.normal(size=(4, 8)).astype("float32")
    masks = (rng.random((4, UNITS)) > 0.3).astype("float32")
    model.save(tmp_path / "f.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "f.keras")([x, masks]), model([x, masks]))


def test_config_round_trip():
    layer = NeuronMask(initial_mask=keep_mask(4, [1]), name="m")
    clone = NeuronMask.from_config(layer.get_config())
    np.testing.assert_array_equal(clone.initial_mask, [1, 0, 1, 1])
    assert clone.name == "m"


def test_input_mask_mode_has_no_variable_and_a_shared_mask_works_in_predict_and_fit(rng):
    """A mask given as an input needs no stored variable; Keras' predict / fit want one row per sample in every
    input, so a shared (1, units) mask goes in as a broadcast view (and the layer's own errors say what to do)."""
    keras.utils.set_random_seed(0)
    x_in, m_in = keras.Input((6,)), keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(x_in)
    masked = NeuronMask(name="mask")([hidden, m_in])
    model = keras.Model([x_in, m_in], keras.layers.Dense(2, name="out")(masked))
    assert model.get_layer("mask").weights == [] and model.count_params() == 6 * 4 + 4 + 4 * 2 + 2
    x = rng.normal(size=(12, 6)).astype("float32")
    shared = np.array([[1, 0, 1, 0]], np.float32)
    got = model.predict([x, np.broadcast_to(shared, (12, 4))], verbose=0)
    w1, b1 = model.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("out").get_weights()
    np.testing.assert_allclose(got, (np.maximum(x @ w1 + b1, 0) * shared) @ w2 + b2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model([x, shared]), got, rtol=1e-5, atol=1e-5)  # direct call: (1, units) broadcasts
    model.compile("adam", "mse")
    model.fit([x, np.broadcast_to(shared, (12, 4))], np.zeros((12, 2)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="takes its mask as an input"):
        model.get_layer("mask").set_mask(np.ones(4))
    with pytest.raises(ValueError, match="takes its mask as an input"):
        model.get_layer("mask").clear_mask()

"""The smaller public surface of masklab.surgery: custom channel-wise layers, layer lookup in nested models,
GroupNormalization with exact=False, the unit choosers and bad ``units``; references by hand (NumPy)."""

import keras
import numpy as np
import pytest

from masklab import surgery

L = keras.layers


class Doubling(L.Layer):
    """A custom layer that acts on each value alone (x -> 2x): unknown to masklab until registered."""

    def call(self, inputs):
        return 2.0 * inputs


def doubling_model():
    keras.utils.set_random_seed(0)
    inputs = L.Input((5,))
    h = Doubling(name="double")(L.Dense(6, name="h")(inputs))
    return keras.Model(inputs, L.Dense(2, name="out")(h))


def test_a_custom_layer_is_refused_until_registered_as_channelwise():
    model = doubling_model()
    with pytest.raises(ValueError, match=r"Doubling 'double'.*register_channelwise"):
        surgery.remove_units(model, "h", [1])
    surgery.register_channelwise(Doubling)
    try:
        pruned = surgery.remove_units(model, "h", [1, 4])
        x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
        w1, b1 = model.get_layer("h").get_weights()
        w2, b2 = model.get_layer("out").get_weights()
        keep = np.array([1, 0, 1, 1, 0, 1], "float32")
        expected = (2 * (x @ w1 + b1) * keep) @ w2 + b2
        np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    finally:
        from masklab.surgery import rules
        rules._EXACT.pop(Doubling)
    with pytest.raises(ValueError, match=r"takes a keras Layer subclass. Received: 'Doubling'"):
        surgery.register_channelwise("Doubling")


def nested_model():
    keras.utils.set_random_seed(1)
    inner_in = L.Input((4,))
    backbone = keras.Model(inner_in, L.Dense(6, activation="relu", name="dense")(inner_in), name="backbone")
    inputs = L.Input((4,))
    return keras.Model(inputs, L.Dense(2, name="dense_out")(backbone(inputs)), name="outer"), backbone


def test_layers_are_found_in_nested_models_by_name_or_path():
    model, backbone = nested_model()
    assert surgery.find_layer(model, "backbone/dense") is backbone.get_layer("dense")
    assert surgery.find_layer(model, "dense") is backbone.get_layer("dense")
    with pytest.raises(ValueError, match=r"No layer named 'nope' in model 'outer'. Received: layer='nope'"):
        surgery.find_layer(model, "nope")
    with pytest.raises(ValueError, match=r"layer must be a layer name, path or object. Received: layer=3"):
        surgery.find_layer(model, 3)
    # a path is exact: "dense_out" is the outer layer; a bare name found in two nested models is ambiguous
    assert surgery.find_layer(model, "dense_out") is model.get_layer("dense_out")
    keras.utils.set_random_seed(2)
    towers = []
    inputs = L.Input((4,))
    for name in ("left", "right"):
        inner_in = L.Input((4,))
        towers.append(keras.Model(inner_in, L.Dense(3, name="dense")(inner_in), name=name)(inputs))
    clash = keras.Model(inputs, L.Add()(towers))
    with pytest.raises(ValueError, match=r"Several layers are named 'dense': \['left/dense', 'right/dense'\]"):
        surgery.find_layer(clash, "dense")
    assert surgery.find_layer(clash, "right/dense").name == "dense"


def test_units_by_activation_inside_a_nested_model_matches_numpy():
    model, backbone = nested_model()
    x = np.random.default_rng(3).normal(size=(50, 4)).astype("float32")
    w, b = backbone.get_layer("dense").get_weights()
    mean = np.maximum(x @ w + b, 0).mean(axis=0)
    chosen = surgery.units_by_activation(model, "backbone/dense", x, 2)
    np.testing.assert_allclose(np.sort(mean[chosen]), np.sort(mean)[:2], atol=1e-6)


def test_group_normalization_with_exact_false_needs_equal_removal_per_group():
    keras.utils.set_random_seed(4)
    inputs = L.Input((8, 8, 3))
    h = L.GroupNormalization(groups=2, name="gn")(L.Conv2D(8, 3, name="conv")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h)))
    with pytest.raises(ValueError, match=r"GroupNormalization 'gn' normalizes over the channel axis"):
        surgery.remove_units(model, "conv", [0, 4])
    with pytest.raises(ValueError, match=r"'gn' \(GroupNormalization, groups=2\) needs the same number"):
        surgery.remove_units(model, "conv", [0, 1], exact=False)
    with pytest.warns(UserWarning, match=r"exact=False.*\['gn'\]"):
        pruned = surgery.remove_units(model, "conv", [0, 4], exact=False)
    gamma = model.get_layer("gn").get_weights()[0]
    np.testing.assert_array_equal(pruned.get_layer("gn").get_weights()[0], gamma[[1, 2, 3, 5, 6, 7]])
    assert pruned.get_layer("gn").groups == 2


@pytest.mark.parametrize("units, message", [
    (3, r"units must be a list of indices; to remove index 3 pass \[3\]"),
    ("3", r"flat list of integer indices. Received: units='3'"),
    ([[1, 2]], r"flat list of integer indices"),
    ([True], r"flat list of integer indices"),
    (None, r"list of integer indices. Received: units=None"),
])
def test_bad_units_say_what_was_received(units, message):
    model, _ = nested_model()
    with pytest.raises(ValueError, match=message):
        surgery.remove_units(model, "backbone/dense", units)


def test_dependency_group_of_a_layer_without_channels_says_so():
    model, _ = nested_model()
    with pytest.raises(ValueError, match=r"'backbone' .*has no output channels|not part of"):
        surgery.dependency_group(model, "backbone")


def test_new_models_traced_drops_only_the_first_trace_warning(caplog):
    """Inside the block the tensorflow logger drops its "retracing" warning (first traces of new models) and
    nothing else; outside, that warning passes again."""
    import logging

    from masklab import surgery

    logger = logging.getLogger("tensorflow")
    message = "5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is expensive"
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        with surgery.new_models_traced():
            logger.warning(message)
            logger.warning("another warning")
        logger.warning(message)
    texts = [record.getMessage() for record in caplog.records if record.name == "tensorflow"]
    assert texts == ["another warning", message]

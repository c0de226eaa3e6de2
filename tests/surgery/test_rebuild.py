"""Rebuilding the pruned model: state outside config and weights survives, layers that cannot be rebuilt are
named, unusual outputs and inputs work, and the self-check refuses a rebuild that went wrong. Found by trying
masklab as a new user would; references are computed by hand (weights zeroed in a copy, NumPy)."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from masklab import surgery
from masklab.layers import NeuronMask

L = keras.layers


def zeroed_prediction(model, layer_name, units, x):
    """The original's output with ``units`` of a ReLU Dense switched off by hand (kernel columns and bias set to
    0 in place, then restored): no clone, since keras.models.clone_model itself loses state outside config and
    weights (adapted vocabularies, plain attributes) and cannot copy Lambda layers or subclassed models."""
    layer = model.get_layer(layer_name)
    saved = layer.get_weights()
    kernel, bias = (w.copy() for w in saved)
    kernel[:, units], bias[units] = 0.0, 0.0
    layer.set_weights([kernel, bias])
    try:
        return np.asarray(model(x))
    finally:
        layer.set_weights(saved)


def test_adapted_normalization_keeps_its_statistics():
    x = np.random.default_rng(0).normal(3, 2, size=(64, 6)).astype("float32")
    norm = L.Normalization(name="norm")
    norm.adapt(x)
    inputs = L.Input((6,))
    h = L.Dense(16, activation="relu", name="d1")(norm(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    pruned = surgery.remove_units(model, "d1", [0, 3])
    np.testing.assert_allclose(np.ravel(pruned.get_layer("norm").mean), np.ravel(norm.mean))
    # the reference must not be a clone (clone_model + set_weights loses an adapted Normalization too): by hand
    w1, b1 = model.get_layer("d1").get_weights()
    w2, b2 = model.get_layer("out").get_weights()
    keep = np.ones(16)
    keep[[0, 3]] = 0
    normalized = (x - np.ravel(norm.mean)) / np.sqrt(np.ravel(norm.variance))
    expected = (np.maximum(normalized @ w1 + b1, 0) * keep) @ w2 + b2
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)


class Temperature(L.Layer):
    """Divides by ``t``, a plain attribute set after construction (not in its config, not a weight)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.t = 1.0

    def call(self, x):
        return x / self.t


def test_untouched_layers_keep_state_their_config_does_not_carry_and_their_names():
    keras.utils.set_random_seed(0)
    inputs = L.Input((8,))
    temperature = Temperature(name="temp")
    temperature.t = 4.0
    h = L.Dense(12, activation="relu", name="d1")(inputs)
    model = keras.Model(inputs, temperature(L.Dense(3, name="out")(h)))
    pruned = surgery.remove_units(model, "d1", [0, 1])
    assert [l.name for l in pruned.layers] == [l.name for l in model.layers]
    x = np.random.default_rng(1).normal(size=(8, 8)).astype("float32")
    expected = zeroed_prediction(model, "d1", [0, 1], x)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow_only  # string inputs through TextVectorization: TensorFlow tensors
def test_text_models_keep_their_vocabulary_and_accept_strings():
    texts = np.array(["the cat sat", "a dog ran far", "the dog sat down", "cats and dogs"] * 4)
    vectorize = L.TextVectorization(max_tokens=20, output_sequence_length=5, name="tv")
    vectorize.adapt(texts)
    keras.utils.set_random_seed(2)
    inputs = L.Input((1,), dtype="string")
    h = L.GlobalAveragePooling1D()(L.Embedding(20, 8, name="emb")(vectorize(inputs)))
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(8, activation="relu", name="d1")(h)))
    x = tf.constant(texts[:, None])
    pruned = surgery.remove_units(model, "d1", [1])
    assert pruned.get_layer("tv").get_vocabulary() == vectorize.get_vocabulary()
    expected = zeroed_prediction(model, "d1", [1], x)
    np.testing.assert_allclose(np.asarray(pruned(x)), expected, rtol=1e-5, atol=1e-6)
    assert surgery.verify_equivalence(model, pruned, "d1", [1], x) < 1e-5
    assert surgery.prune(model, 0.3, x=x).relative_difference < 1e-5


def test_dropout_noise_shape_follows_the_channels_and_the_model_still_trains():
    keras.utils.set_random_seed(3)
    inputs = L.Input((10, 4))
    h = L.Conv1D(16, 3, padding="same", name="conv")(inputs)
    h = L.Dropout(0.3, noise_shape=(None, 1, 16), name="drop")(h)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling1D()(h)))
    pruned = surgery.remove_units(model, "conv", [0, 5, 6, 9])
    assert tuple(pruned.get_layer("drop").noise_shape) == (None, 1, 12)
    pruned.compile("adam", "mse")
    pruned.fit(np.ones((4, 10, 4), "float32"), np.zeros((4, 2), "float32"), epochs=1, verbose=0)


def test_lambda_layers_untouched_by_the_removal_need_no_unsafe_deserialization():
    keras.utils.set_random_seed(4)
    inputs = L.Input((6,))
    h = L.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(8, activation="relu", name="d1")(h)))
    pruned = surgery.remove_units(model, "d1", [2])
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), zeroed_prediction(model, "d1", [2], x), atol=1e-6)


class Sub(keras.Model):
    """A subclassed model with weights, used as a layer; it has no usable get_config."""

    def __init__(self, width):
        super().__init__()
        self.dense = L.Dense(width)

    def call(self, x):
        return self.dense(x)


def test_a_layer_that_cannot_be_rebuilt_is_named():
    keras.utils.set_random_seed(5)
    inputs = L.Input((4,))
    h = L.Dense(6, activation="relu", name="post")(Sub(4)(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    with pytest.raises(ValueError, match=r"layer 'sub' \(Sub\) cannot be rebuilt from its get_config\(\)"):
        surgery.remove_units(model, "post", [0])
    with pytest.raises(ValueError, match=r"layer 'sub' \(Sub\) cannot be rebuilt"):
        surgery.prune(model, 0.5)


def test_dict_outputs_and_keras_ops_reshape():
    keras.utils.set_random_seed(6)
    inputs = L.Input((4, 4, 3))
    h = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
    flat = keras.ops.reshape(h, (-1, 4 * 4 * 8))
    shared = L.Dense(6, activation="relu", name="shared")(flat)
    model = keras.Model(inputs, {"cls": L.Dense(3, name="cls")(shared), "reg": L.Dense(1, name="reg")(shared)})
    x = np.random.default_rng(0).normal(size=(5, 4, 4, 3)).astype("float32")
    pruned = surgery.remove_units(model, "conv", [1, 2])
    assert pruned.get_layer("shared").kernel.shape == (4 * 4 * 6, 6)
    assert surgery.verify_equivalence(model, pruned, "conv", [1, 2], x) < 1e-5
    result = surgery.prune(model, 0.3, x=x)
    assert result.relative_difference < 1e-5 and set(result.model.predict(x, verbose=0)) == {"cls", "reg"}


def test_bn_scale_on_a_batchnorm_after_a_concatenation_of_several_groups():
    keras.utils.set_random_seed(7)
    inputs = L.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(inputs)
    b = L.Conv2D(6, 1, name="b")(inputs)
    bn = L.BatchNormalization(name="bn")
    h = L.ReLU()(bn(L.Concatenate()([a, b])))
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h)))
    gamma = np.array([0.5, 0.1, 0.9, 0.3, 1.0, 0.2, 0.7, 0.05, 0.6, 0.8], "float32")
    bn.set_weights([gamma, np.zeros(10), np.zeros(10), np.ones(10)])
    result = surgery.prune(model, 0.5, criterion="bn_scale")
    np.testing.assert_array_equal(result.removed["a"], np.sort(np.argsort(gamma[:4])[:2]))
    np.testing.assert_array_equal(result.removed["b"], np.sort(np.argsort(gamma[4:])[:3]))


def test_a_mask_input_ties_neuron_mask_channels_to_the_model_input():
    keras.utils.set_random_seed(8)
    inputs, masks = L.Input((5,)), L.Input((10,), name="mask")
    h = NeuronMask(name="nm")([L.Dense(10, activation="relu", name="d1")(inputs), masks])
    model = keras.Model([inputs, masks], L.Dense(2, name="out")(h))
    with pytest.raises(ValueError, match=r"NeuronMask 'nm' combines them channel by channel with the model "
                                         r"input 'mask'"):
        surgery.remove_units(model, "d1", [0])


def test_prune_works_on_variable_input_sizes_with_macs_unknown():
    keras.utils.set_random_seed(9)
    inputs = L.Input((None, None, 3))
    h = L.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(L.Conv2D(6, 3, name="c2")(h))))
    x = np.random.default_rng(0).normal(size=(2, 9, 11, 3)).astype("float32")
    result = surgery.prune(model, 0.5, x=x)
    assert result.macs_before is None and result.report["macs_before"].isna().all()
    assert result.relative_difference < 1e-5
    assert result.model.get_layer("c1").filters == 4 and result.model.get_layer("c2").filters == 3
    with pytest.raises(ValueError, match=r"count_macs needs fixed input sizes"):
        surgery.count_macs(model)


def test_remove_heads_refuses_a_layer_that_returns_its_scores():
    keras.utils.set_random_seed(10)
    tokens = L.Input((5, 8))
    attended, scores = L.MultiHeadAttention(4, 2, name="mha")(tokens, tokens, return_attention_scores=True)
    model = keras.Model(tokens, [L.GlobalAveragePooling1D()(attended), scores])
    with pytest.raises(ValueError, match=r"cannot remove heads of 'mha': it returns its attention scores"):
        surgery.remove_heads(model, "mha", [1])


class AddScaled(L.Layer):
    """x + 0.5 * y: element-wise across two inputs."""

    def call(self, inputs):
        return inputs[0] + 0.5 * inputs[1]


def test_a_registered_two_input_layer_ties_its_inputs():
    keras.utils.set_random_seed(11)
    inputs = L.Input((6,))
    stem = L.Dense(8, name="stem")(inputs)
    branch = L.Dense(8, name="branch")(stem)
    model = keras.Model(inputs, L.Dense(2, name="out")(AddScaled(name="res")([stem, branch])))
    surgery.register_channelwise(AddScaled)
    try:
        assert set(surgery.dependency_group(model, "stem")) == {"stem", "branch"}
        pruned = surgery.remove_units(model, "stem", [0, 3])
    finally:
        from masklab.surgery import rules
        rules._EXACT.pop(AddScaled)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    ws, bs = model.get_layer("stem").get_weights()
    wb, bb = model.get_layer("branch").get_weights()
    wo, bo = model.get_layer("out").get_weights()
    keep = np.ones(8)
    keep[[0, 3]] = 0
    s = (x @ ws + bs) * keep
    expected = ((s + 0.5 * (s @ wb + bb)) * keep) @ wo + bo
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_pruning_that_creates_the_keras_channels_first_bias_coincidence_warns():
    keras.utils.set_random_seed(12)
    model = keras.Sequential([L.Input((3, 6, 6)), L.Conv2D(8, 1, data_format="channels_first", name="c1"),
                              L.Flatten(), L.Dense(2)])
    with pytest.warns(UserWarning, match=r"\['c1'\]: channels_first convolutions whose output width now equals"):
        surgery.remove_units(model, "c1", [0, 1])


@pytest.mark.parametrize("x, message", [
    (np.zeros((0, 5), "float32"), r"x must hold at least one sample"),
    (tf.data.Dataset.from_tensor_slices(np.zeros((4, 5), "float32")), r"x must be NumPy arrays"),
    ((row for row in np.zeros((4, 5))), r"x must be NumPy arrays"),
    ({"wrong": np.zeros((4, 5))}, r"x is a dict without the model's inputs"),
])
def test_bad_x_is_refused_with_what_was_received(x, message):
    keras.utils.set_random_seed(13)
    model = keras.Sequential([L.Input((5,)), L.Dense(6, activation="relu", name="h"), L.Dense(2)])
    with pytest.raises(ValueError, match=message):
        surgery.prune(model, 0.5, "activation", x=x)


@pytest.mark.parametrize("kwargs, message", [
    (dict(check_samples=0), r"check_samples must be a positive integer. Received: check_samples=0"),
    (dict(batch_size=0), r"batch_size must be a positive integer. Received: batch_size=0"),
    (dict(exact="no"), r"exact must be True or False. Received: exact='no'"),
])
def test_bad_prune_settings(kwargs, message):
    model = keras.Sequential([L.Input((5,)), L.Dense(6, name="h"), L.Dense(2)])
    with pytest.raises(ValueError, match=message):
        surgery.prune(model, 0.5, x=np.zeros((3, 5), "float32"), **kwargs)


def test_the_input_layer_is_not_a_target():
    model = keras.Sequential([L.Input((5,)), L.Dense(6, name="h"), L.Dense(2)])
    functional = keras.Model(model.inputs, model.outputs)
    with pytest.raises(ValueError, match=r"is the model's input: its channels cannot be removed"):
        surgery.remove_units(functional, functional.layers[0], [0])


def test_the_self_check_refuses_a_rebuild_that_went_wrong(monkeypatch):
    """Corrupt the slicing of Dense kernels on purpose: the new model must not come back."""
    from masklab.surgery import rules

    original_slice = rules.DenseRule.slice

    def corrupted(self, rec, config, weights, keep):
        config, weights = original_slice(self, rec, config, weights, keep)
        return config, {k: (v * 1.01 if k.endswith("kernel") else v) for k, v in weights.items()}

    monkeypatch.setattr(rules.DenseRule, "slice", corrupted)
    keras.utils.set_random_seed(14)
    model = keras.Sequential([L.Input((5,)), L.Dense(6, activation="relu", name="h"), L.Dense(2, name="o")])
    with pytest.raises(RuntimeError, match=r"internal check failed: the rebuilt model differs"):
        surgery.remove_units(model, "h", [0])
    with pytest.raises(RuntimeError, match=r"internal check failed: the pruned model differs"):
        surgery.prune(model, 0.5, x=np.random.default_rng(0).normal(size=(4, 5)).astype("float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert surgery.remove_units(model, "h", [0], check=False).get_layer("h").units == 5


def bidirectional_reference(model, removals: dict, consumer: str, rows):
    """The original with recurrent kernel rows zeroed per direction (``{inner layer: rows}``) and the consumer's
    input rows zeroed, computed in place and restored."""
    bidirectional = model.get_layer("bi")
    inner = {"forward": bidirectional.forward_layer, "backward": bidirectional.backward_layer}
    saved = model.get_weights()
    try:
        for direction, units in removals.items():
            recurrent = inner[direction].cell.recurrent_kernel
            value = recurrent.numpy()
            value[units] = 0.0
            recurrent.assign(value)
        kernel = model.get_layer(consumer).kernel
        value = kernel.numpy()
        value[rows] = 0.0
        kernel.assign(value)
        return model.predict(X_SEQ, verbose=0)
    finally:
        model.set_weights(saved)


X_SEQ = np.random.default_rng(21).normal(size=(5, 6, 4)).astype("float32")


@pytest.mark.parametrize("rnn", [L.LSTM, L.GRU, L.SimpleRNN])
def test_bidirectional_concat_removes_units_of_each_direction(rnn):
    keras.utils.set_random_seed(20)
    inputs = L.Input((6, 4))
    h = L.Bidirectional(rnn(5), name="bi")(inputs)                   # forward units 0-4, backward 5-9
    model = keras.Model(inputs, L.Dense(3, name="out")(h))
    pruned = surgery.remove_units(model, "bi", [1, 4, 7, 8])
    assert pruned.get_layer("bi").forward_layer.units == 3 and pruned.get_layer("bi").backward_layer.units == 3
    assert pruned.get_layer("out").kernel.shape == (6, 3)
    expected = bidirectional_reference(model, {"forward": [1, 4], "backward": [2, 3]}, "out", [1, 4, 7, 8])
    np.testing.assert_allclose(pruned.predict(X_SEQ, verbose=0), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"'bi' \(Bidirectional\) needs as many units removed from its forward as "
                                         r"from its backward direction.*\[1, 2\]"):
        surgery.remove_units(model, "bi", [1, 7, 8])


def test_bidirectional_sum_removes_a_unit_from_both_directions_and_its_input_rows():
    keras.utils.set_random_seed(22)
    inputs = L.Input((6, 4))
    h = L.Conv1D(8, 3, padding="same", name="conv")(inputs)
    h = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="sum", name="bi")(h)
    model = keras.Model(inputs, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(h)))
    pruned = surgery.remove_units(model, "bi", [0, 3])
    assert pruned.get_layer("bi").forward_layer.units == 3 and pruned.get_layer("bi").backward_layer.units == 3
    expected = bidirectional_reference(model, {"forward": [0, 3], "backward": [0, 3]}, "out", [0, 3])
    np.testing.assert_allclose(pruned.predict(X_SEQ, verbose=0), expected, rtol=1e-5, atol=1e-5)
    conv_pruned = surgery.remove_units(model, "conv", [2, 5])           # the GRU kernels lose two input rows
    assert pruned.get_layer("bi").forward_layer.cell.kernel.shape == (8, 9)
    assert conv_pruned.get_layer("bi").backward_layer.cell.kernel.shape == (6, 15)
    assert surgery.verify_equivalence(model, conv_pruned, "conv", [2, 5], X_SEQ) < 1e-5
    assert surgery.count_macs(model) == surgery.layer_macs(model)["conv"] + 6 * 2 * (8 * 15 + 5 * 15) + 5 * 3

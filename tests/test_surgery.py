"""remove_units against independent computations: NumPy forward passes and weight slices written by hand, and
copies of the original model whose consumer kernel rows for the removed channels are zeroed by hand."""

import keras
import numpy as np
import pytest

from masklab import surgery


def seed_cnn(num_classes=10):
    """Seed 004's federated-learning CNN (channels_last, 'same' padding)."""
    keras.utils.set_random_seed(0)
    conv = lambda filters, name: keras.layers.Conv2D(filters, 5, padding="same", activation="relu", name=name)  # noqa
    return keras.Sequential([
        keras.Input((28, 28, 1)), conv(32, "conv_1"), keras.layers.MaxPooling2D(2, padding="same", name="pool_1"),
        conv(64, "conv_2"), keras.layers.MaxPooling2D(2, padding="same", name="pool_2"),
        keras.layers.Flatten(name="flatten"), keras.layers.Dense(512, activation="relu", name="dense_512"),
        keras.layers.Dense(num_classes, name="logits")])


@pytest.fixture(scope="module")
def cnn():
    return seed_cnn()


@pytest.fixture
def images():
    return np.random.default_rng(0).random((6, 28, 28, 1)).astype("float32")


def zeroed_consumer_copy(model, consumer_rows: dict) -> keras.Model:
    """The original model with the given input rows / channels of consumer kernels set to 0 by hand."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name, rows in consumer_rows.items():
        weights = copy.get_layer(name).get_weights()
        if weights[0].ndim == 2:
            weights[0][rows] = 0.0
        else:
            weights[0][:, :, rows, :] = 0.0
        copy.get_layer(name).set_weights(weights)
    return copy


def test_seed_cnn_loses_100_dense_units(cnn, images):
    units = np.random.default_rng(1).choice(512, 100, replace=False)
    before = [w.copy() for w in cnn.get_weights()]
    pruned = surgery.remove_units(cnn, "dense_512", units)
    kept = np.setdiff1d(np.arange(512), units)
    assert pruned.get_layer("dense_512").units == 412
    assert pruned.get_layer("dense_512").kernel.shape == (3136, 412)
    assert pruned.get_layer("logits").kernel.shape == (412, 10)
    # NumPy by hand from the original weights, with the units masked after the ReLU
    features = keras.Model(cnn.inputs, cnn.get_layer("flatten").output).predict(images, verbose=0)
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in cnn.get_layer("dense_512").get_weights()
                      + cnn.get_layer("logits").get_weights())
    keep = np.zeros(512)
    keep[kept] = 1.0
    expected = (np.maximum(features @ w1 + b1, 0) * keep) @ w2 + b2
    np.testing.assert_allclose(pruned.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)
    assert surgery.verify_equivalence(cnn, pruned, "dense_512", units, images) < 1e-4
    # the original is untouched
    assert cnn.get_layer("dense_512").units == 512
    for a, b in zip(before, cnn.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_conv_filters_through_batchnorm_pool_and_flatten(images):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, name="conv")(inputs)                                  # 26 x 26 x 8
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu", name="relu")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)                                     # 13 x 13 x 8
    h = keras.layers.Flatten(name="flatten")(h)
    model = keras.Model(inputs, keras.layers.Dense(5, name="dense")(h))
    bn = model.get_layer("bn")  # non-trivial statistics so that a zeroed channel would not stay 0 after BN
    rng = np.random.default_rng(2)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    removed = [1, 4, 5]
    kept = np.array([0, 2, 3, 6, 7])
    pruned = surgery.remove_units(model, "conv", removed)
    np.testing.assert_array_equal(pruned.get_layer("conv").get_weights()[0],
                                  model.get_layer("conv").get_weights()[0][..., kept])
    for new, old in zip(pruned.get_layer("bn").get_weights(), bn.get_weights()):
        np.testing.assert_array_equal(new, old[kept])
    flat_rows = np.arange(13 * 13 * 8).reshape(13, 13, 8)[:, :, kept].ravel()  # channels-last flatten order
    np.testing.assert_array_equal(pruned.get_layer("dense").get_weights()[0],
                                  model.get_layer("dense").get_weights()[0][flat_rows])
    dropped_rows = np.arange(13 * 13 * 8).reshape(13, 13, 8)[:, :, removed].ravel()
    reference = zeroed_consumer_copy(model, {"dense": dropped_rows})
    np.testing.assert_allclose(pruned.predict(images, verbose=0), reference.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert surgery.verify_equivalence(model, pruned, "conv", removed, images) < 1e-5


def test_conv_filters_into_the_next_conv(cnn, images):
    removed = np.arange(0, 32, 3)
    pruned = surgery.remove_units(cnn, "conv_1", removed)
    assert pruned.get_layer("conv_2").kernel.shape == (5, 5, 32 - removed.size, 64)
    reference = zeroed_consumer_copy(cnn, {"conv_2": removed})
    np.testing.assert_allclose(pruned.predict(images, verbose=0), reference.predict(images, verbose=0),
                               rtol=1e-4, atol=1e-4)


def test_functional_model_with_a_branching_consumer():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((10,))
    h = keras.layers.Dense(16, activation="relu", name="shared")(inputs)
    a = keras.layers.Dense(4, name="head_a")(h)
    b = keras.layers.Dense(3, name="head_b")(keras.layers.Dropout(0.5, name="drop")(h))
    model = keras.Model(inputs, keras.layers.Concatenate(name="concat")([a, b]))
    removed = [0, 3, 15]
    pruned = surgery.remove_units(model, "shared", removed)
    assert pruned.get_layer("head_a").kernel.shape == (13, 4)
    assert pruned.get_layer("head_b").kernel.shape == (13, 3)
    x = np.random.default_rng(4).normal(size=(9, 10)).astype("float32")
    reference = zeroed_consumer_copy(model, {"head_a": removed, "head_b": removed})
    np.testing.assert_allclose(pruned.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def merge_model():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(6, activation="relu", name="h")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Add(name="add")([h, inputs])))


def layer_norm_model():
    inputs = keras.Input((6,))
    h = keras.layers.LayerNormalization(name="ln")(keras.layers.Dense(8, name="h")(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def output_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="h"), keras.layers.Dense(3, name="o")])


@pytest.mark.parametrize("build, layer, message", [
    (merge_model, "h", r"Add 'add' combines them channel by channel with the model input"),
    (layer_norm_model, "h", r"LayerNormalization 'ln' normalizes over the channel axis"),
    (output_model, "o", r"reach the model's output"),
])
def test_refuses_where_removal_cannot_be_exact(build, layer, message):
    with pytest.raises(ValueError, match=message):
        surgery.remove_units(build(), layer, [0])


@pytest.mark.parametrize("layer, units, message", [
    ("nope", [0], r"No layer named 'nope'.*Received: layer='nope'"),
    ("flatten", [0], r"cannot remove units \[0\] of 'flatten' alone: they are tied to its units \[64, 128"),
    ("dense_512", [512], r"\[0, 512\). Received out of range: \[512\]"),
    ("dense_512", [-1], r"Received out of range: \[-1\]"),
    ("dense_512", [3, 3], r"duplicates: \[3\]"),
    ("dense_512", [], r"must not be empty"),
    ("dense_512", [1.5], r"integer indices"),
    ("dense_512", list(range(512)), r"cannot remove every one of the 512 units of 'dense_512'"),
])
def test_bad_input_is_refused_with_what_was_received(cnn, layer, units, message):
    with pytest.raises(ValueError, match=message):
        surgery.remove_units(cnn, layer, units)


def test_pruned_model_saves_loads_and_keeps_training(cnn, images, tmp_path):
    pruned = surgery.remove_units(cnn, "dense_512", np.arange(100))
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), pruned.predict(images, verbose=0))
    loaded.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = loaded.get_layer("dense_512").get_weights()[0].copy()
    loaded.fit(images, np.arange(6) % 10, epochs=1, verbose=0)
    assert not np.array_equal(before, loaded.get_layer("dense_512").get_weights()[0])


def test_unit_choosers_match_numpy(cnn, images):
    kernel = cnn.get_layer("dense_512").get_weights()[0]
    np.testing.assert_array_equal(surgery.units_by_weight_norm(cnn, "dense_512", 7),
                                  np.sort(np.argsort(np.linalg.norm(kernel, axis=0))[:7]))
    np.testing.assert_array_equal(surgery.units_by_weight_norm(cnn, "dense_512", 7, ord=1),
                                  np.sort(np.argsort(np.abs(kernel).sum(axis=0))[:7]))
    conv_kernel = cnn.get_layer("conv_2").get_weights()[0]
    np.testing.assert_array_equal(surgery.units_by_weight_norm(cnn, "conv_2", 5),
                                  np.sort(np.argsort(np.sqrt((conv_kernel ** 2).sum(axis=(0, 1, 2))))[:5]))
    features = keras.Model(cnn.inputs, cnn.get_layer("flatten").output).predict(images, verbose=0)
    activation = np.maximum(features @ kernel + cnn.get_layer("dense_512").get_weights()[1], 0).mean(axis=0)
    chosen = surgery.units_by_activation(cnn, "dense_512", images, 20)
    # ties among dead (always-0) units: compare the activation values, not the indices
    np.testing.assert_allclose(np.sort(activation[chosen]), np.sort(activation)[:20], atol=1e-5)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 512\). Received: n=512"):
        surgery.units_by_weight_norm(cnn, "dense_512", 512)

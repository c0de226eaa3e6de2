"""SparseDense against NumPy by hand: forward pass, gradients, and off-mask weights that stay exactly 0."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from masklab.layers import SparseDense, connectivity_from_pairs
from masklab.layers import sparse_dense as sparse_dense_module

IN, UNITS = 30, 7
IMPLEMENTATIONS = ["dense", "sparse"]


@pytest.fixture
def mask():
    m = np.random.default_rng(0).random((IN, UNITS)) < 0.25
    m[0, :] = True  # every unit has at least one input
    return m


@pytest.fixture
def x():
    return np.random.default_rng(1).normal(size=(16, IN)).astype("float32")


def numpy_kernel(layer, mask) -> np.ndarray:
    """The effective kernel rebuilt by hand from the layer's raw variables."""
    if layer.implementation == "dense":
        return np.asarray(layer.kernel) * mask
    kernel = np.zeros(mask.shape, np.float32)
    kernel[mask] = np.asarray(layer.values)  # values follow the row-major order of the connections
    return kernel


def built_layer(mask, implementation, seed=3, **kwargs):
    keras.utils.set_random_seed(seed)
    layer = SparseDense(UNITS, mask, implementation=implementation, **kwargs)
    layer.build((None, IN))
    return layer


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_forward_matches_numpy(mask, x, implementation):
    layer = built_layer(mask, implementation, activation="relu", bias_initializer="random_normal")
    expected = np.maximum(x @ numpy_kernel(layer, mask) + np.asarray(layer.bias), 0)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(np.asarray(layer.effective_kernel())[~mask]) == 0
    assert np.count_nonzero(np.asarray(layer.effective_kernel())[mask]) == mask.sum()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradient_is_exactly_zero_off_the_mask(mask, x, implementation):
    layer = built_layer(mask, implementation, kernel_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.01))
    upstream = np.random.default_rng(2).normal(size=(len(x), UNITS)).astype("float32")
    raw = layer.kernel if implementation == "dense" else layer.values
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * upstream) + tf.add_n(layer.losses)
    grad = np.asarray(tape.gradient(loss, raw))
    kernel = numpy_kernel(layer, mask)
    by_hand = (x.T @ upstream + 0.01 * np.sign(kernel) + 0.02 * kernel) * mask  # d/dW of sum(y*g) + L1 + L2
    if implementation == "dense":
        assert np.all(grad[~mask] == 0.0), "gradient off the mask must be exactly 0"
        np.testing.assert_allclose(grad, by_hand, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(grad, by_hand[mask], rtol=1e-4, atol=1e-4)


def test_implementations_agree_on_outputs_and_gradients(mask, x):
    layers = {impl: built_layer(mask, impl, activation="tanh", bias_initializer="random_normal")
              for impl in IMPLEMENTATIONS}
    np.testing.assert_array_equal(numpy_kernel(layers["dense"], mask), numpy_kernel(layers["sparse"], mask))
    outputs, grads = {}, {}
    for impl, layer in layers.items():
        raw = layer.kernel if impl == "dense" else layer.values
        with tf.GradientTape() as tape:
            outputs[impl] = layer(x)
            loss = tf.reduce_sum(outputs[impl] ** 2)
        grads[impl] = [np.asarray(g) for g in tape.gradient(loss, [raw, layer.bias])]
    np.testing.assert_allclose(np.asarray(outputs["dense"]), np.asarray(outputs["sparse"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["dense"][0][mask], grads["sparse"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["dense"][1], grads["sparse"][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("optimizer, regularizer, constraint", [
    (lambda: keras.optimizers.Adam(0.01), keras.regularizers.L2(0.01), None),
    (lambda: keras.optimizers.SGD(0.05, momentum=0.9), keras.regularizers.L1(0.001), None),
    (lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1), None, keras.constraints.MaxNorm(0.5)),
    (lambda: keras.optimizers.Adam(0.01), keras.regularizers.OrthogonalRegularizer(0.01), None),
    (lambda: keras.optimizers.SGD(0.01), None, keras.constraints.NonNeg()),
    (lambda: keras.optimizers.SGD(0.01), None, lambda w: w + 0.001),  # a constraint that would fill the zeros
], ids=["adam-l2", "sgd-momentum-l1", "adamw-maxnorm", "adam-orthogonal", "sgd-nonneg", "sgd-shift"])
def test_training_never_creates_an_off_mask_weight(mask, implementation, optimizer, regularizer, constraint):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, IN)).astype("float32")
    y = (x @ rng.normal(size=(IN, UNITS))).astype("float32")  # the target needs every input: pressure off-mask
    keras.utils.set_random_seed(5)
    layer = SparseDense(UNITS, mask, implementation=implementation, kernel_regularizer=regularizer,
                        kernel_constraint=constraint)
    model = keras.Sequential([keras.Input((IN,)), layer])
    model.compile(optimizer(), "mse")
    before = numpy_kernel(layer, mask).copy()
    model.fit(x, y, batch_size=8, epochs=10, verbose=0)  # 320 steps
    after = numpy_kernel(layer, mask)
    assert np.count_nonzero(np.asarray(layer.effective_kernel())[~mask]) == 0
    if implementation == "dense":
        assert np.count_nonzero(np.asarray(layer.kernel)[~mask]) == 0, "raw kernel moved off the mask"
    assert not np.allclose(before[mask], after[mask]), "connected weights should have trained"
    if isinstance(constraint, keras.constraints.NonNeg):
        assert after.min() >= 0
    if isinstance(constraint, keras.constraints.MaxNorm):
        assert np.sqrt((after ** 2).sum(axis=0)).max() <= 0.5 + 1e-5


def test_a_non_elementwise_regularizer_sends_no_gradient_off_the_mask(mask, x):
    """L1/L2 have zero gradient at a zero weight; the orthogonal regularizer does not, unless it sees the
    effective kernel."""
    layer = built_layer(mask, "dense", kernel_regularizer=keras.regularizers.OrthogonalRegularizer(1.0))
    with tf.GradientTape() as tape:
        loss = tf.add_n(layer.losses)
    grad = np.asarray(tape.gradient(loss, layer.kernel))
    assert np.all(grad[~mask] == 0.0) and np.any(grad[mask] != 0.0)


def test_regularization_loss_is_computed_on_the_effective_kernel(mask):
    for impl in IMPLEMENTATIONS:
        layer = built_layer(mask, impl, kernel_regularizer=keras.regularizers.L1L2(l1=0.1, l2=0.2))
        kernel = numpy_kernel(layer, mask)
        expected = 0.1 * np.abs(kernel).sum() + 0.2 * (kernel ** 2).sum()
        np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)


def test_sparse_implementation_has_only_the_connected_weights_as_parameters(mask):
    layer = built_layer(mask, "sparse")
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == mask.sum() + UNITS
    dense = built_layer(mask, "dense")
    assert sum(int(np.prod(w.shape)) for w in dense.trainable_weights) == mask.size + UNITS


def test_auto_picks_by_density():
    threshold = sparse_dense_module.AUTO_SPARSE_MAX_DENSITY
    rng = np.random.default_rng(0)
    low = rng.random((200, 50)) < threshold / 2
    high = rng.random((200, 50)) < min(1.0, threshold * 2 + 0.1)
    assert SparseDense(50, low).implementation == "sparse"
    assert SparseDense(50, high).implementation == "dense"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_save_and_load_keep_outputs_and_the_mask(tmp_path, mask, x, implementation):
    inputs = keras.Input((IN,))
    hidden = SparseDense(UNITS, connectivity_from_pairs(
        [(f"g{i}", f"p{j}") for i, j in np.argwhere(mask)], [f"g{i}" for i in range(IN)],
        [f"p{j}" for j in range(UNITS)]), activation="relu", implementation=implementation,
        kernel_regularizer="l2", kernel_constraint="non_neg", activity_regularizer="l1", name="sparse")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile("adam", "mse")
    model.fit(x, np.ones((len(x), 3)), epochs=2, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    layer = loaded.get_layer("sparse")
    np.testing.assert_array_equal(layer.connectivity.matrix, mask)
    assert layer.connectivity.unit_names == tuple(f"p{j}" for j in range(UNITS))
    assert layer.implementation == implementation
    assert isinstance(layer.activity_regularizer, keras.regularizers.L1)
    assert np.count_nonzero(np.asarray(layer.effective_kernel())[~mask]) == 0


def test_works_in_sequential_and_functional_models_under_xla(mask, x):
    y = np.random.default_rng(6).normal(size=(len(x), 2)).astype("float32")
    keras.utils.set_random_seed(0)
    sequential = keras.Sequential([keras.Input((IN,)), SparseDense(UNITS, mask, activation="relu"),
                                   keras.layers.Dense(2)])
    inputs = keras.Input((IN,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(SparseDense(UNITS, mask, "relu")(inputs)))
    for model in (sequential, functional):
        model.compile("adam", "mse", jit_compile=True)
        model.fit(x, y, epochs=3, verbose=0)
        sparse, head = model.layers[-2], model.layers[-1]
        by_hand = np.maximum(x @ numpy_kernel(sparse, mask) + np.asarray(sparse.bias), 0) @ \
            np.asarray(head.kernel) + np.asarray(head.bias)
        np.testing.assert_allclose(model.predict(x, verbose=0), by_hand, rtol=1e-4, atol=1e-5)
    layer = SparseDense(UNITS, mask)
    compiled = tf.function(layer, jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(layer(x)), rtol=1e-5, atol=1e-6)


def test_rank_3_inputs_use_the_last_axis(mask):
    layer = built_layer(mask, "sparse")
    x3 = np.random.default_rng(7).normal(size=(2, 5, IN)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(x3)), x3 @ numpy_kernel(layer, mask) + np.asarray(layer.bias),
                               rtol=1e-5, atol=1e-5)


# --- bad input ------------------------------------------------------------------------------------------------
def test_input_dim_mismatch_is_a_clear_error_at_build(mask):
    layer = SparseDense(UNITS, mask)
    with pytest.raises(ValueError, match=rf"connectivity has {IN} rows.*input has {IN + 1} features"):
        layer(np.zeros((2, IN + 1), "float32"))


@pytest.mark.parametrize("matrix, message", [
    (np.array([[0, 1], [2, 1]]), r"0 or 1.*Received: \[2\]"),
    (np.array([[0, 0.5], [1, 1]]), r"0 or 1.*Received: \[0.5\]"),
    (np.array([[0, np.nan], [1, 1]]), r"NaN at \(input, unit\) \[\[0, 1\]\]"),
    (np.zeros((3, 2)), r"no connection at all"),
    (np.ones(4), r"2-D.*Received: shape \(4,\)"),
    (np.array([["a", "b"], ["c", "d"]]), r"0 or 1.*dtype <U1"),
])
def test_bad_connectivity_is_refused_with_what_was_received(matrix, message):
    with pytest.raises(ValueError, match=message):
        SparseDense(2, matrix)


def test_units_must_match_the_columns(mask):
    with pytest.raises(ValueError, match=rf"{UNITS} columns but units=3"):
        SparseDense(3, mask)
    with pytest.raises(ValueError, match=r"implementation must be one of.*Received: implementation='fast'"):
        SparseDense(UNITS, mask, implementation="fast")


def test_a_unit_without_inputs_is_allowed_and_warned_about_once(mask, x):
    mask = mask.copy()
    mask[:, 2] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = SparseDense(UNITS, mask, activation="relu", bias_initializer="ones")
        layer(x)
        layer(x)
    relevant = [w for w in caught if "no connected input" in str(w.message)]
    assert len(relevant) == 1 and "[2]" in str(relevant[0].message)
    np.testing.assert_array_equal(np.asarray(layer(x))[:, 2], np.ones(len(x)))  # relu(0 + bias)

"""SparseDense against NumPy by hand: forward pass, gradients, and off-mask weights that stay exactly 0."""

import warnings

import keras
import numpy as np
import pytest
from backend_tools import compiled, gradients, to_numpy
from keras import ops

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
        return np.asarray(layer.full_kernel) * mask
    kernel = np.zeros(mask.shape, np.float32)
    inputs, units = np.nonzero(mask.T)[::-1]  # values go unit by unit, inputs ascending within a unit
    kernel[inputs, units] = np.asarray(layer.values)
    return kernel


def raw_variable(layer):
    return layer.full_kernel if layer.implementation == "dense" else layer.values


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
    raw = raw_variable(layer)
    (grad,), _ = gradients(lambda: ops.sum(layer(x) * upstream) + sum(layer.losses), [raw])
    kernel = numpy_kernel(layer, mask)
    by_hand = (x.T @ upstream + 0.01 * np.sign(kernel) + 0.02 * kernel) * mask  # d/dW of sum(y*g) + L1 + L2
    if implementation == "dense":
        assert np.all(grad[~mask] == 0.0), "gradient off the mask must be exactly 0"
        np.testing.assert_allclose(grad, by_hand, rtol=1e-4, atol=1e-4)
    else:
        inputs, units = layer.connections.T
        np.testing.assert_allclose(grad, by_hand[inputs, units], rtol=1e-4, atol=1e-4)


def test_implementations_agree_on_outputs_and_gradients(mask, x):
    layers = {impl: built_layer(mask, impl, activation="tanh", bias_initializer="random_normal")
              for impl in IMPLEMENTATIONS}
    np.testing.assert_array_equal(numpy_kernel(layers["dense"], mask), numpy_kernel(layers["sparse"], mask))
    outputs, grads = {}, {}
    for impl, layer in layers.items():
        outputs[impl] = to_numpy(layer(x))
        grads[impl], _ = gradients(lambda: ops.sum(layer(x) ** 2), [raw_variable(layer), layer.bias])
    np.testing.assert_allclose(outputs["dense"], outputs["sparse"], rtol=1e-6, atol=1e-6)
    inputs, units = layers["sparse"].connections.T
    np.testing.assert_allclose(grads["dense"][0][inputs, units], grads["sparse"][0], rtol=1e-5, atol=1e-6)
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
        assert np.count_nonzero(np.asarray(layer.full_kernel)[~mask]) == 0, "raw kernel moved off the mask"
    assert not np.allclose(before[mask], after[mask]), "connected weights should have trained"
    if isinstance(constraint, keras.constraints.NonNeg):
        assert after.min() >= 0
    if isinstance(constraint, keras.constraints.MaxNorm):
        assert np.sqrt((after ** 2).sum(axis=0)).max() <= 0.5 + 1e-5


def test_a_non_elementwise_regularizer_sends_no_gradient_off_the_mask(mask, x):
    """L1/L2 have zero gradient at a zero weight; the orthogonal regularizer does not, unless it sees the
    effective kernel."""
    layer = built_layer(mask, "dense", kernel_regularizer=keras.regularizers.OrthogonalRegularizer(1.0))
    (grad,), _ = gradients(lambda: sum(layer.losses), [layer.full_kernel])
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


def test_auto_stores_by_density():
    threshold = sparse_dense_module.AUTO_SPARSE_MAX_DENSITY
    rng = np.random.default_rng(0)
    low = rng.random((2000, 50)) < threshold / 2
    high = rng.random((2000, 50)) < min(1.0, threshold * 2 + 0.1)
    assert SparseDense(50, low).implementation == "sparse" and SparseDense(50, low).auto
    assert SparseDense(50, high).implementation == "dense"


def test_auto_takes_the_gather_path_by_the_measured_crossover(x):
    """The crossover table interpolated on log-log by hand; outputs equal whichever path a call takes."""
    table = sparse_dense_module.AUTO_CROSSOVER_DENSITY
    rng = np.random.default_rng(12)
    density = np.sqrt(table["training"][128] * table["training"][1024])  # the crossover at batch sqrt(128 * 1024)
    matrix = rng.random((IN * 100, UNITS)) < density
    layer = SparseDense(UNITS, matrix)
    real = matrix.mean()

    def by_hand(batch, phase):
        (b0, d0), (b1, d1) = sorted(table[phase].items())
        t = np.clip((np.log(batch) - np.log(b0)) / (np.log(b1) - np.log(b0)), 0, 1)
        return np.exp(np.log(d0) + t * (np.log(d1) - np.log(d0)))

    for batch in (1, 64, 128, 300, 362, 1024, 5000):
        for training in (True, False):
            expected = real <= by_hand(batch, "training" if training else "inference")
            assert layer.uses_gather((batch, IN * 100), training) == expected, (batch, training)
    assert layer.uses_gather((None, IN * 100), True) == (real <= table["training"][128])  # unknown: batch 128
    assert layer.uses_gather((4, 32, IN * 100), True) == (real <= by_hand(128, "training"))  # leading axes count
    assert not SparseDense(UNITS, matrix, implementation="dense").uses_gather((8, IN * 100))
    assert SparseDense(UNITS, matrix, implementation="sparse").uses_gather((100000, IN * 100))
    layer.build((None, IN * 100))
    big = rng.normal(size=(5000, IN * 100)).astype("float32")
    expected = big @ np.asarray(layer.kernel) + np.asarray(layer.bias)
    for rows, training in ((8, True), (5000, False)):  # one call per path
        np.testing.assert_allclose(np.asarray(layer(big[:rows], training=training)), expected[:rows], rtol=1e-4,
                                   atol=1e-4)
    loaded = SparseDense.from_config(layer.get_config())
    assert loaded.auto and loaded.implementation == "sparse"


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
    eager = to_numpy(layer(x))  # built here: JAX cannot create variables inside a compiled call
    np.testing.assert_allclose(to_numpy(compiled(layer)(x)), eager, rtol=1e-5, atol=1e-6)


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


# --- Keras conventions: kernel, weights layout, set_kernel ------------------------------------------------------
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_kernel_is_the_effective_kernel_and_read_only(mask, implementation):
    layer = built_layer(mask, implementation)
    np.testing.assert_array_equal(np.asarray(layer.kernel), numpy_kernel(layer, mask))
    assert np.count_nonzero(np.asarray(layer.kernel)[~mask]) == 0
    with pytest.raises(AttributeError, match=r"read-only.*set_kernel"):
        layer.kernel = np.zeros(mask.shape)
    with pytest.raises(ValueError, match=r"not built yet.*\.kernel"):
        SparseDense(UNITS, mask, name="unbuilt").kernel


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_get_weights_layout(mask, implementation):
    layer = built_layer(mask, implementation, bias_initializer="random_normal")
    weights = layer.get_weights()
    assert len(weights) == 2
    np.testing.assert_array_equal(weights[1], np.asarray(layer.bias))
    kernel = numpy_kernel(layer, mask)
    if implementation == "dense":  # as keras.layers.Dense: [kernel, bias]
        np.testing.assert_array_equal(weights[0], kernel)
    else:  # [values, bias]: unit by unit, inputs ascending (written out by hand here)
        by_hand = [kernel[i, j] for j in range(UNITS) for i in range(IN) if mask[i, j]]
        np.testing.assert_array_equal(weights[0], np.array(by_hand, np.float32))
        assert layer.connections.tolist() == [[i, j] for j in range(UNITS) for i in range(IN) if mask[i, j]]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_set_kernel_and_set_weights(mask, x, implementation):
    rng = np.random.default_rng(8)
    kernel, bias = (rng.normal(size=mask.shape) * mask).astype("float32"), rng.normal(size=UNITS).astype("float32")
    layer = built_layer(mask, implementation)
    layer.set_kernel(kernel)
    layer.bias.assign(bias)
    np.testing.assert_allclose(np.asarray(layer(x)), x @ kernel + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(layer.kernel), kernel)
    # get_weights -> set_weights round trip into a fresh layer of the same implementation
    other = built_layer(mask, implementation, seed=11)
    other.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(other.kernel), kernel)
    off = kernel + (~mask) * 0.5
    with pytest.raises(ValueError, match=rf"{(~mask).sum()} non-zero entries off the connectivity mask"):
        layer.set_kernel(off)
    with pytest.raises(ValueError, match=r"must have shape \(30, 7\).*Received: shape \(7, 30\)"):
        layer.set_kernel(kernel.T)
    if implementation == "dense":
        with pytest.raises(ValueError, match=r"weights\[0\] \(the kernel\) has .* non-zero entries off"):
            layer.set_weights([off, bias])
        dense = keras.layers.Dense(UNITS)  # same layout as keras.layers.Dense
        dense.build((None, IN))
        dense.set_weights(layer.get_weights())
        np.testing.assert_allclose(np.asarray(dense(x)), np.asarray(layer(x)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer.kernel), kernel)  # the refused calls changed nothing


def test_sparse_input_gradient_matches_numpy(mask, x):
    layer = built_layer(mask, "sparse", bias_initializer="random_normal")
    upstream = np.random.default_rng(9).normal(size=(len(x), UNITS)).astype("float32")
    _, (grad,) = gradients(lambda xt: ops.sum(layer(xt) * upstream), inputs=[x])
    np.testing.assert_allclose(grad, upstream @ numpy_kernel(layer, mask).T, rtol=1e-5, atol=1e-5)


def test_sparse_under_xla_equals_numpy(mask, x):
    layer = built_layer(mask, "sparse", activation="tanh", bias_initializer="random_normal")
    np.testing.assert_allclose(to_numpy(compiled(lambda v: layer(v))(x)), np.tanh(x @ numpy_kernel(layer, mask) +
                                                                np.asarray(layer.bias)), rtol=1e-5, atol=1e-5)


# --- initialization: fans ------------------------------------------------------------------------------------------
def by_hand_factors(mask, mode, fan_scaling):
    """std(chosen fans) / std(full shape) for a variance-scaling initializer, written out per entry."""
    n_in, n_units = mask.shape
    full = {"fan_in": n_in, "fan_out": n_units, "fan_avg": (n_in + n_units) / 2}[mode]
    factors = np.ones(mask.shape)
    for i in range(n_in):
        for j in range(n_units):
            if fan_scaling == "nnz":
                real = mask.sum()
            else:
                real = {"fan_in": mask[:, j].sum(), "fan_out": mask[i].sum(),
                        "fan_avg": (mask[:, j].sum() + mask[i].sum()) / 2}[mode]
            factors[i, j] = np.sqrt(full / max(1, real))
    return factors


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("initializer, mode", [("he_normal", "fan_in"), ("glorot_uniform", "fan_avg"),
                                               (keras.initializers.VarianceScaling(mode="fan_out"), "fan_out")])
@pytest.mark.parametrize("fan_scaling", ["connected", "nnz"])
def test_fan_scaling_rescales_the_same_draw(mask, implementation, initializer, mode, fan_scaling):
    full = numpy_kernel(built_layer(mask, implementation, kernel_initializer=initializer, fan_scaling="full"), mask)
    scaled = numpy_kernel(built_layer(mask, implementation, kernel_initializer=initializer,
                                      fan_scaling=fan_scaling), mask)
    np.testing.assert_allclose(scaled, full * by_hand_factors(mask, mode, fan_scaling) * mask, rtol=1e-5)


def test_the_default_draws_like_dense(mask):
    """fan_scaling="full" (the default): the connected entries of the kernel a Dense layer draws from the seed."""
    for initializer in ("glorot_uniform", keras.initializers.RandomNormal(stddev=0.1)):
        layer = built_layer(mask, "sparse", kernel_initializer=initializer)
        keras.utils.set_random_seed(3)
        dense = keras.layers.Dense(UNITS, kernel_initializer=initializer)
        dense.build((None, IN))
        np.testing.assert_array_equal(numpy_kernel(layer, mask), np.asarray(dense.kernel) * mask)


def test_connected_fans_keep_unit_variance_at_any_density():
    """lecun_normal over the real fan-in: a unit's pre-activation has std ~1 on unit-variance inputs whatever the
    density; over the full shape it shrinks to ~sqrt(density)."""
    rng = np.random.default_rng(10)
    n_in, n_units, density = 2000, 20, 0.02
    matrix = rng.random((n_in, n_units)) < density
    x = rng.standard_normal((4000, n_in)).astype("float32")
    stds = {}
    for fan_scaling in ("connected", "full"):
        keras.utils.set_random_seed(0)
        layer = SparseDense(n_units, matrix, use_bias=False, kernel_initializer="lecun_normal",
                            fan_scaling=fan_scaling)
        stds[fan_scaling] = np.asarray(layer(x)).std(axis=0).mean()
    assert 0.85 < stds["connected"] < 1.15
    assert 0.85 * np.sqrt(density) < stds["full"] < 1.15 * np.sqrt(density) + 0.02


def test_fan_scaling_is_checked_and_saved(mask):
    with pytest.raises(ValueError, match=r"fan_scaling must be one of.*Received: fan_scaling='fan_in'"):
        SparseDense(UNITS, mask, fan_scaling="fan_in")
    with pytest.raises(ValueError, match=r"fan_scaling='nnz' applies to variance-scaling.*RandomNormal"):
        SparseDense(UNITS, mask, fan_scaling="nnz", kernel_initializer="random_normal")
    layer = SparseDense(UNITS, mask, fan_scaling="nnz")
    assert SparseDense.from_config(layer.get_config()).fan_scaling == "nnz"
    assert SparseDense(UNITS, mask).fan_scaling == "full"
    with pytest.raises(ValueError, match=r"fan_scaling='connected' applies to variance-scaling"):
        SparseDense(UNITS, mask, fan_scaling="connected", kernel_initializer="zeros")

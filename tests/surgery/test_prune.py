"""Whole-model pruning (``surgery.prune``) and MAC counts against computations written by hand: weight norms,
BatchNorm scales, activations and zero shares in NumPy, MAC formulas per layer, and reference models whose
consumer rows for the removed channels are zeroed by hand."""

import keras
import numpy as np
import pytest

from masklab import surgery

L = keras.layers


def residual_mlp(seed=0, width=8):
    """x -> Dense(width) a; a -> Dense(width) b; Add(a, b) -> Dense(12, relu) -> Dense(3): {a, b} is one group."""
    keras.utils.set_random_seed(seed)
    inputs = L.Input((5,), name="x")
    a = L.Dense(width, name="a")(inputs)
    b = L.Dense(width, activation="relu", name="b")(a)
    h = L.Dense(12, activation="relu", name="hidden")(L.Add(name="add")([a, b]))
    return keras.Model(inputs, L.Dense(3, name="out")(h), name="residual_mlp")


def small_cnn(seed=0):
    """conv(6) -> BN -> relu -> conv(10) -> BN -> relu -> GAP -> dense(4): two groups with BatchNorm."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = L.Input((9, 9, 3), name="image")
    h = inputs
    for i, filters in enumerate((6, 10), start=1):
        h = L.Conv2D(filters, 3, padding="same", name=f"conv{i}")(h)
        h = L.BatchNormalization(name=f"bn{i}")(h)
        h = L.Activation("relu", name=f"relu{i}")(h)
    model = keras.Model(inputs, L.Dense(4, name="out")(L.GlobalAveragePooling2D(name="gap")(h)))
    for i, filters in enumerate((6, 10), start=1):
        model.get_layer(f"bn{i}").set_weights([rng.uniform(0.1, 2.0, filters), rng.normal(size=filters),
                                               rng.normal(size=filters), rng.uniform(0.5, 2.0, filters)])
    return model


def lowest(scores, k):
    return np.sort(np.argsort(scores, kind="stable")[:k])


def zeroed_reference(model, rows: dict):
    """A copy of ``model`` with the given input rows (Dense) / input channels (Conv) of consumers set to 0."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name, index in rows.items():
        weights = copy.get_layer(name).get_weights()
        weights[0][..., list(index), :] = 0.0
        copy.get_layer(name).set_weights(weights)
    return copy


# --- criteria against NumPy -------------------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_weight_norm_criteria_rank_the_whole_group(criterion):
    model = residual_mlp()
    wa, wb = model.get_layer("a").get_weights()[0], model.get_layer("b").get_weights()[0]
    if criterion == "l2":
        scores = np.sqrt((wa ** 2).sum(axis=0) + (wb ** 2).sum(axis=0))
    else:
        scores = np.abs(wa).sum(axis=0) + np.abs(wb).sum(axis=0)
    result = surgery.prune(model, 0.5, criterion=criterion)
    expected = lowest(scores, 4)
    np.testing.assert_array_equal(result.removed["a"], expected)
    np.testing.assert_array_equal(result.removed["b"], expected)
    hidden = model.get_layer("hidden").get_weights()[0]
    hidden_scores = np.sqrt((hidden ** 2).sum(axis=0)) if criterion == "l2" else np.abs(hidden).sum(axis=0)
    np.testing.assert_array_equal(result.removed["hidden"], lowest(hidden_scores, 6))
    # exact: consumers of the group (hidden, and b which reads a) see those channels as 0
    x = np.random.default_rng(1).normal(size=(7, 5)).astype("float32")
    reference = zeroed_reference(model, {"hidden": expected, "b": expected, "out": result.removed["hidden"]})
    np.testing.assert_allclose(result.model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)
    assert result.max_abs_difference is None  # no x given: nothing measured
    assert result.model.get_layer("a").units == 4 and result.model.get_layer("hidden").units == 6


def test_bn_scale_ranks_by_gamma_and_falls_back_to_l2_without_batchnorm():
    model = small_cnn()
    result = surgery.prune(model, 0.5, criterion="bn_scale")
    for i, filters in enumerate((6, 10), start=1):
        gamma = model.get_layer(f"bn{i}").get_weights()[0]
        np.testing.assert_array_equal(result.removed[f"conv{i}"], lowest(np.abs(gamma), filters // 2))
    assert set(result.report.loc[result.report.status == "pruned", "criterion"]) == {"bn_scale"}
    fallback = surgery.prune(residual_mlp(), 0.5, criterion="bn_scale")
    assert set(fallback.report.loc[fallback.report.status == "pruned", "criterion"]) == {"l2 (no BatchNormalization)"}


def test_activation_and_apoz_measure_the_consumer_inputs_on_x():
    keras.utils.set_random_seed(3)
    inputs = L.Input((6,))
    hidden = L.Dense(10, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(hidden))
    x = np.random.default_rng(2).normal(size=(64, 6)).astype("float32")
    w, b = model.get_layer("hidden").get_weights()
    values = np.maximum(x @ w + b, 0)  # what "out" reads
    result = surgery.prune(model, 0.3, criterion="activation", x=x)
    np.testing.assert_array_equal(result.removed["hidden"], lowest(np.abs(values).mean(axis=0), 3))
    result = surgery.prune(model, 0.3, criterion="apoz", x=x)
    np.testing.assert_array_equal(result.removed["hidden"], lowest(-(values == 0).mean(axis=0), 3))
    assert result.max_abs_difference < 1e-5  # measured on x's first samples


def test_random_criterion_follows_the_seed():
    model = residual_mlp()
    first = surgery.prune(model, 0.5, criterion="random", seed=4).removed
    again = surgery.prune(model, 0.5, criterion="random", seed=4).removed
    other = surgery.prune(model, 0.5, criterion="random", seed=5).removed
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert any(not np.array_equal(first[k], other[k]) for k in first)


# --- scopes -----------------------------------------------------------------------------------------------------
def test_local_scope_takes_the_floor_of_amount_per_group():
    model = small_cnn()
    result = surgery.prune(model, 0.3, criterion="l2")
    assert len(result.removed["conv1"]) == 1 and len(result.removed["conv2"]) == 3   # floor(1.8), floor(3.0)
    report = result.report.set_index("producers")
    assert report.loc["conv1", "channels_after"] == 5 and report.loc["conv2", "channels_after"] == 7


def test_global_scope_ranks_scores_normalized_by_their_group_mean():
    model = small_cnn()
    norms = {}
    for name in ("conv1", "conv2"):
        kernel = model.get_layer(name).get_weights()[0]
        norms[name] = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
    pool = sorted((s / norms[name].mean(), name, i) for name in norms for i, s in enumerate(norms[name]))
    total = int(np.floor(0.4 * 16))
    expected = {"conv1": [], "conv2": []}
    for _, name, i in pool[:total]:
        expected[name].append(i)
    result = surgery.prune(model, 0.4, criterion="l2", scope="global")
    for name in norms:
        np.testing.assert_array_equal(result.removed.get(name, np.array([], int)), np.sort(expected[name]))
    assert sum(len(v) for v in result.removed.values()) == total


def test_global_scope_keeps_a_channel_in_every_group():
    keras.utils.set_random_seed(0)
    inputs = L.Input((4,))
    tiny = L.Dense(2, name="tiny")(inputs)                       # tiny weights: the global ranking wants it all
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(40, name="wide")(tiny)))
    model.get_layer("tiny").set_weights([np.full((4, 2), 1e-4, "float32"), np.zeros(2, "float32")])
    result = surgery.prune(model, 0.9, scope="global")
    assert result.model.get_layer("tiny").units == 1 and result.model.get_layer("wide").units >= 1


# --- exactness, blocking and the report -------------------------------------------------------------------------
def test_pruned_cnn_equals_the_hand_zeroed_original():
    model = small_cnn()
    x = np.random.default_rng(5).normal(size=(6, 9, 9, 3)).astype("float32")
    result = surgery.prune(model, 0.5, x=x)
    reference = zeroed_reference(model, {"conv2": result.removed["conv1"]})
    dense_rows = result.removed["conv2"]  # GAP keeps channel order: the Dense loses the same rows
    reference.get_layer("out").set_weights([np.where(np.isin(np.arange(10), dense_rows)[:, None], 0,
                                                     reference.get_layer("out").get_weights()[0]),
                                            reference.get_layer("out").get_weights()[1]])
    np.testing.assert_allclose(result.model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)
    assert result.max_abs_difference < 1e-5
    assert result.model.get_layer("bn2").get_weights()[0].shape == (5,)
    assert result.params_after == result.model.count_params() < result.params_before == model.count_params()


def test_report_names_what_blocks_a_group():
    keras.utils.set_random_seed(1)
    inputs = L.Input((6,))
    normed = L.LayerNormalization(name="ln")(L.Dense(8, name="to_ln")(inputs))
    h = L.Dense(8, activation="relu", name="free")(normed)
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="out")(h))
    report = surgery.prune(model, 0.5).report.set_index("producers")
    assert report.loc["free", "status"] == "pruned"
    assert "LayerNormalization 'ln'" in report.loc["to_ln", "status"]
    assert "softmax" in report.loc["out", "status"]
    assert list(report.columns) == ["group", "n_producers", "channels_before", "channels_after", "criterion",
                                    "status", "params_before", "params_after", "macs_before", "macs_after"]


def test_exact_false_prunes_through_layer_norm_and_reports_the_difference():
    keras.utils.set_random_seed(2)
    inputs = L.Input((6,))
    normed = L.LayerNormalization(name="ln")(L.Dense(8, name="to_ln")(inputs))
    model = keras.Model(inputs, L.Dense(3, name="out")(normed))
    x = np.random.default_rng(3).normal(size=(16, 6)).astype("float32")
    result = surgery.prune(model, 0.5, x=x, exact=False)
    assert result.model.get_layer("ln").get_weights()[0].shape == (4,)
    assert result.approximate_layers == ["ln"]
    # the measured difference is real: recompute it by hand from the masked original
    kept = np.setdiff1d(np.arange(8), result.removed["to_ln"])
    w, b = model.get_layer("to_ln").get_weights()
    h = (x[:16] @ w + b)
    h[:, result.removed["to_ln"]] = 0  # the masked original: the removed channels are 0 wherever they go
    gamma, beta = model.get_layer("ln").get_weights()
    normalized = (h - h.mean(axis=1, keepdims=True)) / np.sqrt(h.var(axis=1, keepdims=True) + 1e-3) * gamma + beta
    normalized[:, result.removed["to_ln"]] = 0
    masked = normalized @ model.get_layer("out").get_weights()[0] + model.get_layer("out").get_weights()[1]
    pruned = result.model.predict(x, verbose=0)
    assert result.max_abs_difference == pytest.approx(np.abs(pruned - masked).max(), rel=1e-3, abs=1e-5)
    assert result.max_abs_difference > 1e-3 and len(kept) == 4
    with pytest.raises(ValueError, match=r"exact=False .* pass x"):
        surgery.prune(model, 0.5, exact=False)


def test_sequential_stays_sequential_and_the_pruned_model_saves_and_trains(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([L.Input((5,)), L.Dense(8, activation="relu", name="h"), L.Dense(2, name="o")])
    result = surgery.prune(model, 0.5)
    assert isinstance(result.model, keras.Sequential)
    result.model.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0))
    loaded.compile("adam", "mse")
    loaded.fit(x, np.zeros((8, 2)), epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(amount=0.0), r"amount must be a fraction in \(0, 1\).*Received: amount=0.0"),
    (dict(amount=1.0), r"Received: amount=1.0"),
    (dict(amount=1.5), r"Received: amount=1.5"),
    (dict(amount=float("nan")), r"Received: amount=nan"),
    (dict(amount=True), r"Received: amount=True"),
    (dict(amount="0.3"), r"Received: amount='0.3'"),
    (dict(amount=0.3, criterion="magnitude"), r"criterion must be one of .*Received: criterion='magnitude'"),
    (dict(amount=0.3, scope="layer"), r"scope must be one of .*Received: scope='layer'"),
    (dict(amount=0.3, criterion="activation"), r"criterion 'activation' measures activations: pass x"),
    (dict(amount=0.3, criterion="apoz"), r"criterion 'apoz' measures activations: pass x"),
    (dict(amount=0.3, criterion="random", seed="0"), r"seed must be an integer. Received: seed='0'"),
])
def test_bad_arguments_are_refused_with_what_was_received(kwargs, message):
    with pytest.raises(ValueError, match=message):
        surgery.prune(residual_mlp(), **kwargs)


# --- MACs -------------------------------------------------------------------------------------------------------
def test_count_macs_matches_the_formulas():
    inputs = L.Input((12, 12, 3))
    h = L.Conv2D(8, 3, padding="same", name="conv")(inputs)                      # 12*12*8 outputs x 3*3*3
    h = L.Conv2D(8, 3, groups=2, name="grouped")(h)                             # 10*10*8 x 3*3*4
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(h)                  # 8*8*16 x 3*3
    h = L.SeparableConv2D(6, 3, name="sep")(h)                                  # 6*6*16*(3*3) + 6*6*16*6
    h = L.Conv2DTranspose(4, 2, strides=2, name="up")(h)                        # 6*6*6 inputs x 2*2*4
    h = L.Reshape((12 * 12, 4))(h)
    h = L.LSTM(5, return_sequences=True, name="lstm")(h)                        # 144 x (4*20 + 5*20)
    h = L.MultiHeadAttention(2, key_dim=3, name="mha")(h, h)
    model = keras.Model(inputs, L.Dense(7, name="dense")(L.Flatten()(h)))      # 144*5 x 7
    t = 144
    mha = 3 * t * 5 * 2 * 3 + 2 * t * t * (3 + 3) + t * 2 * 3 * 5
    expected = {"conv": 12 * 12 * 8 * 27, "grouped": 10 * 10 * 8 * 36, "dw": 8 * 8 * 16 * 9,
                "sep": 6 * 6 * 16 * 9 + 6 * 6 * 16 * 6, "up": 6 * 6 * 6 * 16, "lstm": t * (4 * 20 + 5 * 20),
                "mha": mha, "dense": t * 5 * 7}
    counted = surgery.layer_macs(model)
    assert {k: counted[k] for k in expected} == expected
    assert surgery.count_macs(model) == sum(expected.values())


def test_count_macs_needs_fixed_sizes():
    model = keras.Sequential([L.Input((None, None, 3)), L.Conv2D(4, 3, name="conv")])
    with pytest.raises(ValueError, match=r"fixed input sizes: output of layer 'conv'"):
        surgery.count_macs(model)

"""Ablation of any layer of real model graphs, checked against independent computations: the same network built
again with the replacement ``h * m + (1 - m) * r`` written into it by hand (a Keras layer holding NumPy constants,
no masklab code), hand-zeroed weights, and NumPy formulas."""

import keras
import numpy as np
import pandas as pd
import pytest

from masklab import ablation

L = keras.layers


class Hook(L.Layer):
    """``h * m + (1 - m) * r`` with constants: the reference every ablation is compared with."""

    def __init__(self, keep=None, replacement=None, **kwargs):
        super().__init__(**kwargs)
        self.keep, self.replacement = keep, replacement

    def call(self, h):
        if self.keep is None:
            return h
        keep = keras.ops.convert_to_tensor(self.keep, h.dtype)
        r = 0.0 if self.replacement is None else keras.ops.convert_to_tensor(self.replacement, h.dtype)
        return h * keep + (1.0 - keep) * r


def residual_net(hooks=None):
    """Conv stem -> residual block (conv, conv, add) -> concat with a side branch -> pool -> dense; ``hooks``
    (name -> Hook) after ``conv_a`` (4D) and ``dense`` (2D)."""
    hooks = hooks or {}
    inputs = keras.Input((8, 8, 2), name="x")
    stem = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    a = L.Conv2D(5, 3, padding="same", activation="relu", name="conv_a")(stem)
    a = hooks.get("conv_a", Hook())(a)
    b = L.Conv2D(6, 1, name="conv_b")(a)
    merged = L.Add(name="add")([stem, b])
    side = L.Conv2D(3, 1, activation="relu", name="side")(stem)
    both = L.Concatenate(name="concat")([merged, side])
    pooled = L.GlobalAveragePooling2D(name="pool")(both)
    dense = L.Dense(7, activation="relu", name="dense")(pooled)
    dense = hooks.get("dense", Hook())(dense)
    return keras.Model(inputs, L.Dense(4, name="logits")(dense), name="resnet_like")


def sequence_net(hooks=None):
    hooks = hooks or {}
    inputs = keras.Input((5, 3), name="x")
    h = L.LSTM(6, return_sequences=True, name="lstm")(inputs)
    h = hooks.get("lstm", Hook())(h)
    h = L.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inputs, L.Dense(3, name="logits")(h), name="seq")


def same_weights(build, model, hooks):
    reference = build(hooks)
    reference.set_weights(model.get_weights())
    return reference


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    return residual_net()


@pytest.fixture(scope="module")
def seq():
    keras.utils.set_random_seed(1)
    return sequence_net()


def rng(seed=0):
    return np.random.default_rng(seed)


def hooked_predictions(build, model, x, per_layer_masks, per_layer_replacement=None, shapes=None):
    """For each ablation k, the reference network with Hooks holding mask row k, broadcast on the last axis."""
    k = len(next(iter(per_layer_masks.values())))
    outputs = []
    for row in range(k):
        hooks = {}
        for name, masks in per_layer_masks.items():
            r = None if per_layer_replacement is None else per_layer_replacement.get(name)
            hooks[name] = Hook(masks[row], r)
        outputs.append(same_weights(build, model, hooks).predict(x, verbose=0))
    return np.stack(outputs)


def test_conv_channels_in_a_residual_graph_equal_the_hand_written_network(resnet):
    x = rng().normal(size=(9, 8, 8, 2)).astype("float32")
    masks = (rng(1).random((4, 5)) > 0.5).astype("float32")
    masks[0] = 1
    got = ablation.predict_with_masks(resnet, "conv_a", x, masks, batch_size=7)  # several chunks
    want = hooked_predictions(residual_net, resnet, x, {"conv_a": masks})
    assert got.shape == (4, 9, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(want[1:] - want[0]).max() > 1e-3  # the ablations change the outputs


def test_several_layers_at_once_row_k_belongs_to_ablation_k(resnet):
    x = rng(2).normal(size=(6, 8, 8, 2)).astype("float32")
    conv_masks = (rng(3).random((3, 5)) > 0.5).astype("float32")
    dense_masks = (rng(4).random((3, 7)) > 0.5).astype("float32")
    got = ablation.predict_with_masks(resnet, {"conv_a": conv_masks, "dense": dense_masks}, x)
    want = hooked_predictions(residual_net, resnet, x, {"conv_a": conv_masks, "dense": dense_masks})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sequence_units_are_ablated_at_every_time_step(seq):
    x = rng(5).normal(size=(8, 5, 3)).astype("float32")
    masks = (rng(6).random((3, 6)) > 0.5).astype("float32")
    got = ablation.predict_with_masks(seq, "lstm", x, masks)
    np.testing.assert_allclose(got, hooked_predictions(sequence_net, seq, x, {"lstm": masks}), rtol=1e-5, atol=1e-5)


def test_mean_replacement_keeps_positions_and_uses_reference_data(resnet):
    x = rng(7).normal(size=(5, 8, 8, 2)).astype("float32")
    reference_x = rng(8).normal(size=(30, 8, 8, 2)).astype("float32")
    head = keras.Model(resnet.inputs, resnet.get_layer("conv_a").output)
    mean = np.asarray(head.predict(reference_x, verbose=0), np.float64).mean(axis=0)  # (8, 8, 5)
    masks = np.array([[1, 0, 1, 0, 1], [0, 0, 0, 0, 0]], np.float32)
    got = ablation.predict_with_masks(resnet, "conv_a", x, masks, replacement="mean", reference_x=reference_x)
    want = hooked_predictions(residual_net, resnet, x, {"conv_a": masks}, {"conv_a": mean.astype("float32")})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    zero = ablation.predict_with_masks(resnet, "conv_a", x, masks)
    assert np.abs(zero - got).max() > 1e-3


def test_resample_replacement_takes_each_input_a_drawn_reference_value(seq):
    x = rng(9).normal(size=(7, 5, 3)).astype("float32")
    reference_x = rng(10).normal(size=(11, 5, 3)).astype("float32")
    masks = np.array([[0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0]], np.float32)
    got = ablation.predict_with_masks(seq, "lstm", x, masks, replacement="resample", reference_x=reference_x, seed=3)
    drawn = np.random.default_rng(3).integers(0, 11, size=7)  # the documented draw: one reference per input
    head = keras.Model(seq.inputs, seq.get_layer("lstm").output)
    values = head.predict(reference_x[drawn], verbose=0)  # (7, 5, 6)
    for i in range(7):
        want = hooked_predictions(sequence_net, seq, x[i:i + 1], {"lstm": masks}, {"lstm": values[i]})
        np.testing.assert_allclose(got[:, i:i + 1], want, rtol=1e-5, atol=1e-5)
    again = ablation.predict_with_masks(seq, "lstm", x, masks, replacement="resample", reference_x=reference_x,
                                        seed=3)
    np.testing.assert_array_equal(got, again)


def test_array_replacement_and_soft_masks(resnet):
    x = rng(11).normal(size=(4, 8, 8, 2)).astype("float32")
    value = np.linspace(-1, 1, 7).astype("float32")
    masks = np.array([[0.5, 1, 0, 1, 0.25, 1, 0]], np.float32)
    got = ablation.predict_with_masks(resnet, "dense", x, masks, replacement=value)
    want = hooked_predictions(residual_net, resnet, x, {"dense": masks}, {"dense": value})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_reductions_stream_the_same_numbers_as_the_outputs(resnet):
    x = rng(12).normal(size=(40, 8, 8, 2)).astype("float32")
    y = rng(13).integers(0, 4, size=40)
    y[y == 3] = 2  # class 3 absent: NaN in per-class accuracy
    masks = (rng(14).random((5, 5)) > 0.5).astype("float32")
    want = hooked_predictions(residual_net, resnet, x, {"conv_a": masks}).argmax(-1)  # (5, 40)
    clean = resnet.predict(x, verbose=0).argmax(-1)
    kwargs = dict(batch_size=16)
    np.testing.assert_allclose(ablation.predict_with_masks(resnet, "conv_a", x, masks, reduce="accuracy", y=y,
                                                           **kwargs), (want == y).mean(1))
    np.testing.assert_allclose(ablation.predict_with_masks(resnet, "conv_a", x, masks, reduce="agreement",
                                                           **kwargs), (want == clean).mean(1))
    per_class = ablation.predict_with_masks(resnet, "conv_a", x, masks, reduce="per_class_accuracy", y=y, **kwargs)
    for c in range(3):
        np.testing.assert_allclose(per_class[:, c], (want[:, y == c] == c).mean(1))
    assert np.isnan(per_class[:, 3]).all()


def test_single_unit_ablation_table_against_one_hand_written_network_per_unit(resnet):
    x = rng(15).normal(size=(60, 8, 8, 2)).astype("float32")
    y = resnet.predict(x, verbose=0).argmax(-1)
    y[::3] = (y[::3] + 1) % 4  # not all correct
    table = ablation.single_unit_ablation(resnet, "dense", x, y)
    assert list(table.columns) == ["unit", "accuracy", "accuracy_drop"] + [f"drop_class_{c}" for c in range(4)]
    clean = resnet.predict(x, verbose=0).argmax(-1)
    assert table.attrs["accuracy"] == pytest.approx((clean == y).mean())
    for unit in range(7):
        keep = np.ones((1, 7), np.float32)
        keep[0, unit] = 0
        predicted = hooked_predictions(residual_net, resnet, x, {"dense": keep})[0].argmax(-1)
        row = table.iloc[unit]
        assert row.accuracy == pytest.approx((predicted == y).mean())
        assert row.accuracy_drop == pytest.approx((clean == y).mean() - (predicted == y).mean())
        for c in range(4):
            in_c = y == c
            want = (clean[in_c] == c).mean() - (predicted[in_c] == c).mean() if in_c.any() else np.nan
            assert row[f"drop_class_{c}"] == pytest.approx(want, nan_ok=True)


def test_class_selectivity_by_the_formula(resnet):
    x = rng(16).normal(size=(50, 8, 8, 2)).astype("float32")
    y = rng(17).integers(0, 3, size=50)
    for layer in ("conv_a", "dense"):
        values = keras.Model(resnet.inputs, resnet.get_layer(layer).output).predict(x, verbose=0).astype(np.float64)
        per_input = values.reshape(len(x), -1, values.shape[-1]).mean(axis=1)
        mu = np.stack([per_input[y == c].mean(0) for c in range(3)])
        got = ablation.class_selectivity(resnet, layer, x, y)
        for unit in range(values.shape[-1]):
            top = mu[:, unit].max()
            rest = (mu[:, unit].sum() - top) / 2
            want = 0.0 if top + rest == 0 else (top - rest) / (top + rest)
            assert got[unit] == pytest.approx(want, abs=1e-6)
        assert ((got >= 0) & (got <= 1)).all()


def test_a_unit_active_for_one_class_only_has_selectivity_one_and_a_dead_unit_zero():
    inputs = keras.Input((3,))
    hidden = L.Dense(3, activation="relu", name="h")(inputs)
    model = keras.Model(inputs, L.Dense(2)(hidden))
    model.get_layer("h").set_weights([np.diag([1.0, 0.0, 1.0]).astype("float32"), np.zeros(3, "float32")])
    x = np.array([[1, 0, 1], [2, 0, 1], [0, 0, 1], [0, 0, 1]], np.float32)
    y = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(ablation.class_selectivity(model, "h", x, y), [1.0, 0.0, 0.0])


def test_channels_first_layers_are_ablated_on_axis_1():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((2, 6, 6))
    conv = L.Conv2D(4, 3, data_format="channels_first", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(conv)))
    x = rng(18).normal(size=(3, 2, 6, 6)).astype("float32")
    masks = np.array([[1, 0, 1, 0]], np.float32)
    head = keras.Model(inputs, conv)
    h = head.predict(x, verbose=0) * masks[0][None, :, None, None]
    tail_flat = h.reshape(3, -1)
    w, b = model.layers[-1].get_weights()
    np.testing.assert_allclose(ablation.predict_with_masks(model, "conv", x, masks)[0], tail_flat @ w + b,
                               rtol=1e-5, atol=1e-5)


def test_layers_inside_nested_models_by_path():
    keras.utils.set_random_seed(3)
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.Dense(5, activation="relu", name="hidden")(inner_in), name="backbone")
    outer_in = keras.Input((4,))
    model = keras.Model(outer_in, L.Dense(2, name="head")(inner(outer_in)))
    x = rng(19).normal(size=(6, 4)).astype("float32")
    masks = np.array([[1, 0, 0, 1, 1], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], np.float32)
    w1, b1 = inner.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("head").get_weights()
    got = ablation.predict_with_masks(model, "backbone/hidden", x, masks)
    for k in range(3):
        want = (np.maximum(x @ w1 + b1, 0) * masks[k]) @ w2 + b2
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-5)


def test_a_nested_model_with_a_residual_around_it():
    """The nested model's output is expanded by a target inside it while its input is not: the skip connection
    around it must be tiled to match."""
    keras.utils.set_random_seed(4)
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.Dense(4, activation="relu", name="hidden")(inner_in), name="block")
    outer_in = keras.Input((4,))
    summed = L.Add()([outer_in, inner(outer_in)])
    model = keras.Model(outer_in, L.Dense(2, name="head")(summed))
    x = rng(25).normal(size=(5, 4)).astype("float32")
    masks = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], np.float32)
    w1, b1 = inner.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("head").get_weights()
    got = ablation.predict_with_masks(model, "block/hidden", x, masks)
    for k in range(2):
        np.testing.assert_allclose(got[k], (x + np.maximum(x @ w1 + b1, 0) * masks[k]) @ w2 + b2, rtol=1e-5,
                                   atol=1e-5)


def test_keras_resnet50_block_channels_equal_a_hand_zeroed_clone():
    keras.utils.set_random_seed(4)
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10,
                                        classifier_activation=None)
    x = rng(20).normal(size=(4, 32, 32, 3)).astype("float32")
    off = [1, 5, 9, 40]
    keep = np.ones((1, 64), np.float32)
    keep[0, off] = 0
    got = ablation.predict_with_masks(model, "conv2_block1_1_relu", x, keep)[0]
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    consumer = clone.get_layer("conv2_block1_2_conv")  # the only consumer of that activation
    kernel, bias = consumer.get_weights()
    kernel[:, :, off, :] = 0
    consumer.set_weights([kernel, bias])
    want = clone.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want - model.predict(x, verbose=0)).max() > 1e-3  # the ablation matters (outputs ~1e-2)


def test_ablation_curve_across_several_layers_ablates_each_layer_in_proportion(resnet):
    x = rng(21).normal(size=(30, 8, 8, 2)).astype("float32")
    y = resnet.predict(x, verbose=0).argmax(-1)
    table = ablation.ablation_curve(resnet, ["conv_a", "dense"], x, y, [0.0, 0.4, 1.0], strategies=["random"],
                                    repeats=2, seed=5)
    assert list(table.n_off) == [0, 2 + 3, 5 + 7] * 2  # round(0.4 * 5) + round(0.4 * 7)
    layer_seeds = np.random.SeedSequence(int(np.random.SeedSequence(5).generate_state(2)[1])).generate_state(2)
    perms = [np.random.default_rng(int(s)).permutation(n) for s, n in zip(layer_seeds, (5, 7))]
    conv_keep, dense_keep = np.ones((1, 5), np.float32), np.ones((1, 7), np.float32)
    conv_keep[0, np.argsort(-perms[0], kind="stable")[:2]] = 0
    dense_keep[0, np.argsort(-perms[1], kind="stable")[:3]] = 0
    predicted = hooked_predictions(residual_net, resnet, x, {"conv_a": conv_keep, "dense": dense_keep})[0].argmax(-1)
    row = table[(table.repeat == 1) & (table.fraction == 0.4)].iloc[0]
    assert row.accuracy == pytest.approx((predicted == y).mean())
    assert table[table.fraction == 0.0].accuracy.eq(1.0).all()


def test_ablation_curve_orders_by_selectivity_and_importance_on_reference_data(resnet):
    x = rng(22).normal(size=(30, 8, 8, 2)).astype("float32")
    y = resnet.predict(x, verbose=0).argmax(-1)
    ref_x = rng(23).normal(size=(40, 8, 8, 2)).astype("float32")
    ref_y = rng(24).integers(0, 4, size=40)
    table = ablation.ablation_curve(resnet, "dense", x, y, [0.3], strategies=["highest_selectivity",
                                    "highest_importance"], reference_x=ref_x, reference_y=ref_y)
    selectivity = ablation.class_selectivity(resnet, "dense", ref_x, ref_y)
    importance = ablation.single_unit_ablation(resnet, "dense", ref_x, ref_y).accuracy_drop.to_numpy()
    for strategy, score in (("highest_selectivity", selectivity), ("highest_importance", importance)):
        keep = np.ones((1, 7), np.float32)
        keep[0, np.argsort(-score, kind="stable")[:2]] = 0
        predicted = hooked_predictions(residual_net, resnet, x, {"dense": keep})[0].argmax(-1)
        assert table[table.strategy == strategy].accuracy.iloc[0] == pytest.approx((predicted == y).mean())


def test_a_layer_that_no_output_depends_on_changes_nothing():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((3,))
    side = L.Dense(4, name="side")(inputs)
    out = L.Dense(2, name="out")(inputs)
    model = keras.Model(inputs, [out, side])
    first_only = keras.Model(inputs, out)
    x = rng(26).normal(size=(4, 3)).astype("float32")
    got = ablation.predict_with_masks(first_only, {"out": np.ones((2, 2), np.float32)}, x)
    assert got.shape == (2, 4, 2)
    outs = ablation.predict_with_masks(model, "side", x, np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32))
    np.testing.assert_allclose(outs[0][0], outs[0][1])  # "out" does not depend on "side"
    np.testing.assert_allclose(outs[1][1], 0.0)


def test_shared_layers_and_bad_combinations_are_refused(resnet):
    shared = L.Dense(3, name="shared")
    a = keras.Input((3,))
    model = keras.Model(a, shared(shared(a)))
    with pytest.raises(ValueError, match="'shared' is called 2 times"):
        ablation.predict_with_masks(model, "shared", np.ones((2, 3), np.float32), np.ones((1, 3)))
    x = np.ones((2, 8, 8, 2), np.float32)
    with pytest.raises(ValueError, match="same number of masks"):
        ablation.predict_with_masks(resnet, {"conv_a": np.ones((2, 5)), "dense": np.ones((3, 7))}, x)
    with pytest.raises(ValueError, match="leave masks=None"):
        ablation.predict_with_masks(resnet, {"conv_a": np.ones((2, 5))}, x, np.ones((2, 5)))
    with pytest.raises(ValueError, match="reference_x"):
        ablation.predict_with_masks(resnet, "conv_a", x, np.ones((1, 5)), replacement="mean")
    with pytest.raises(ValueError, match="replacement.*'median'"):
        ablation.predict_with_masks(resnet, "conv_a", x, np.ones((1, 5)), replacement="median")
    with pytest.raises(ValueError, match="reduce.*'loss'"):
        ablation.predict_with_masks(resnet, "conv_a", x, np.ones((1, 5)), reduce="loss")
    with pytest.raises(ValueError, match="pass y"):
        ablation.predict_with_masks(resnet, "conv_a", x, np.ones((1, 5)), reduce="accuracy")
    with pytest.raises(ValueError, match=r"\[0, 4\).*\[9\]"):
        ablation.predict_with_masks(resnet, "conv_a", x, np.ones((1, 5)), reduce="accuracy", y=[0, 9])
    assert isinstance(ablation.single_unit_ablation(resnet, "conv_a", x, [0, 1]), pd.DataFrame)


def test_xla_compiled_ablation_equals_the_graph_one(resnet):
    x = rng(27).normal(size=(6, 8, 8, 2)).astype("float32")
    masks = (rng(28).random((3, 7)) > 0.5).astype("float32")
    graph = ablation.predict_with_masks(resnet, "dense", x, masks)
    xla = ablation.predict_with_masks(resnet, "dense", x, masks, jit_compile=True)
    np.testing.assert_allclose(xla, graph, rtol=1e-5, atol=1e-5)

"""NSDropout against NumPy: class means and argsort by hand, per-sample routing, scales, every inference mode."""

import keras
import numpy as np
import pytest
from backend_tools import compiled, gradients, to_numpy
from keras import ops

from masklab import models
from masklab.layers import NSDropout, NSDropoutPredictor, NSDropoutRefresh, decide_from_all_masks, predict_classes

UNITS, CLASSES, RATE = 10, 3, 0.3
N_DROP = 3  # round(10 * 0.3)


def numpy_class_masks(train_h, train_y, mask_h, mask_y, previous=None, n_drop=N_DROP, classes=CLASSES):
    """Class by class, the way the seed describes it: mean per class on each side, drop the n largest differences."""
    masks = np.ones((classes, train_h.shape[1]), np.float32) if previous is None else previous.copy()
    for c in range(classes):
        if (train_y == c).any() and (mask_y == c).any():
            difference = train_h[train_y == c].mean(axis=0) - mask_h[mask_y == c].mean(axis=0)
            masks[c] = 1.0
            masks[c, np.argsort(-difference, kind="stable")[:n_drop]] = 0.0
    return masks


def built_layer(**kwargs):
    layer = NSDropout(kwargs.pop("rate", RATE), CLASSES, **kwargs)
    layer.build([(None, UNITS), (None,)])
    return layer


def data(rng, n, units=UNITS, every_class=True):
    h = rng.normal(size=(n, units)).astype("float32")
    y = rng.permutation(np.arange(n) % CLASSES) if every_class else rng.integers(0, CLASSES, n)
    return h, y


def random_masks(rng):
    masks = np.ones((CLASSES, UNITS), np.float32)
    for row in masks:
        row[rng.choice(UNITS, N_DROP, replace=False)] = 0
    return masks


def test_refresh_matches_class_means_and_argsort_by_hand(rng):
    layer = built_layer()
    train_h, train_y = data(rng, 60)
    mask_h, mask_y = data(rng, 30)
    assert layer.refresh(train_h, train_y, mask_h, mask_y) == []
    expected = numpy_class_masks(train_h, train_y, mask_h, mask_y)
    np.testing.assert_array_equal(layer.get_class_masks(), expected)
    assert (expected == 0).sum(axis=1).tolist() == [N_DROP] * CLASSES and layer.is_refreshed


def test_a_class_absent_from_the_training_side_keeps_its_previous_mask(rng):
    layer = built_layer()
    first = data(rng, 60), data(rng, 30)
    layer.refresh(*first[0], *first[1])
    before = layer.get_class_masks()
    train_h, train_y = data(rng, 40)
    keep = train_y != 2
    mask_h, mask_y = data(rng, 30)
    assert layer.refresh(train_h[keep], train_y[keep], mask_h, mask_y) == [2]
    expected = numpy_class_masks(train_h[keep], train_y[keep], mask_h, mask_y, previous=before)
    np.testing.assert_array_equal(layer.get_class_masks(), expected)
    np.testing.assert_array_equal(layer.get_class_masks()[2], before[2])


def test_training_routes_each_sample_to_its_class_mask_scaled_by_one_over_keep(rng):
    layer = built_layer()
    masks = random_masks(rng)
    layer.set_class_masks(masks)
    h, y = data(rng, 12)
    out = np.asarray(layer([h, y], training=True))
    np.testing.assert_allclose(out, h * masks[y] / (1 - RATE), rtol=1e-6)


def test_gradient_is_the_routed_mask_times_the_scale(rng):
    layer = built_layer()
    masks = random_masks(rng)
    layer.set_class_masks(masks)
    h, y = data(rng, 9)
    _, (grad,) = gradients(lambda ht: ops.sum(layer([ht, y], training=True)), inputs=[h])
    np.testing.assert_allclose(grad, masks[y] / (1 - RATE), rtol=1e-6)


def test_before_the_first_refresh_training_is_bernoulli_dropout_and_inference_the_identity(rng):
    layer = built_layer(seed=5)
    h = np.abs(rng.normal(size=(4000, UNITS))).astype("float32") + 0.1
    y = np.arange(4000) % CLASSES
    out = np.asarray(layer([h, y], training=True))
    kept = out != 0
    np.testing.assert_allclose(out[kept], h[kept] / (1 - RATE), rtol=1e-6)
    assert abs((~kept).mean() - RATE) < 0.02
    assert (~kept).any(axis=1).mean() > 0.5  # per sample, not one shared mask per class
    np.testing.assert_array_equal(np.asarray(layer([h, y], training=False)), h)


@pytest.mark.parametrize("rescale", [True, False])
def test_inference_applies_the_given_class_mask_and_minus_one_means_none(rng, rescale):
    layer = built_layer(rescale_inference=rescale)
    masks = random_masks(rng)
    layer.set_class_masks(masks)
    h, _ = data(rng, 6)
    classes = np.array([0, 1, 2, -1, 2, -1])
    scale = 1 / (1 - RATE) if rescale else 1.0
    expected = np.where(classes[:, None] >= 0, h * masks[np.maximum(classes, 0)] * scale, h)
    np.testing.assert_allclose(np.asarray(layer([h, classes], training=False)), expected, rtol=1e-6)


def test_step_schedule_recomputes_the_masks_in_graph_from_the_batch(rng):
    layer = built_layer(refresh="step")
    mask_h, mask_y = data(rng, 30)
    h, y = data(rng, 45)
    # no mask-split means yet: Bernoulli masks, class masks untouched
    layer([h, y], training=True)
    assert not layer.is_refreshed
    layer.set_mask_split(mask_h, mask_y)
    step = compiled(lambda a, b: layer([a, b], training=True), layer.variables)
    out = to_numpy(step(h, y.astype("int32")))
    expected = numpy_class_masks(h, y, mask_h, mask_y)
    np.testing.assert_array_equal(layer.get_class_masks(), expected)
    np.testing.assert_allclose(out, h * expected[y] / (1 - RATE), rtol=1e-5)
    # a later batch without class 1: class 1 keeps the mask it had
    h2, y2 = data(rng, 40)
    keep = y2 != 1
    step(h2[keep], y2[keep].astype("int32"))
    np.testing.assert_array_equal(layer.get_class_masks(),
                                  numpy_class_masks(h2[keep], y2[keep], mask_h, mask_y, previous=expected))


# ------------------------------------------------------------------------------------------- model level


def relu(z):
    return np.maximum(z, 0)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def small_model(rng, rescale=True, refresh="epoch"):
    keras.utils.set_random_seed(0)
    model = models.dropout_mlp(6, (UNITS, 7), CLASSES, rate=RATE, refresh=refresh, rescale_inference=rescale)
    model.get_layer("dropout").set_class_masks(random_masks(rng))
    return model


def numpy_outputs(model, x, masks_per_sample, scale):
    w = {name: [np.asarray(v) for v in model.get_layer(name).weights] for name in ("hidden_1", "hidden_2", "output")}
    h = relu(x @ w["hidden_1"][0] + w["hidden_1"][1]) * masks_per_sample * scale
    return softmax(relu(h @ w["hidden_2"][0] + w["hidden_2"][1]) @ w["output"][0] + w["output"][1])


@pytest.mark.parametrize("rescale", [True, False])
def test_every_inference_mode_matches_a_forward_pass_by_hand(rng, rescale):
    model = small_model(rng, rescale)
    masks = model.get_layer("dropout").get_class_masks()
    scale = 1 / (1 - RATE) if rescale else 1.0
    x = rng.normal(size=(200, 6)).astype("float32") * 3
    y = rng.integers(0, CLASSES, 200)
    plain = numpy_outputs(model, x, np.ones(UNITS), 1.0)
    per_mask = np.stack([numpy_outputs(model, x, masks[k], scale) for k in range(CLASSES)])
    first_guess = plain.argmax(-1)
    expected = {
        "none": first_guess,
        "oracle": numpy_outputs(model, x, masks[y], scale).argmax(-1),
        "predicted": numpy_outputs(model, x, masks[first_guess], scale).argmax(-1),
        "all": np.array([np.argmax([per_mask[k, n, k] for k in range(CLASSES)]) for n in range(len(x))]),
    }
    predictor = NSDropoutPredictor(model)
    got = predictor.predict_classes_by_mode(x, ("none", "predicted", "all", "oracle"), y)
    for mode in expected:
        np.testing.assert_array_equal(got[mode], expected[mode], err_msg=mode)
        np.testing.assert_array_equal(predictor.predict_classes(x, mode, y if mode == "oracle" else None),
                                      expected[mode], err_msg=mode)
    got_plain, got_per_mask = predictor.outputs_under_every_mask(x)
    np.testing.assert_allclose(got_plain, plain, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_per_mask, per_mask, rtol=1e-4, atol=1e-6)
    average = per_mask.mean(axis=0).argmax(-1)
    np.testing.assert_array_equal(predictor.predict_classes(x, "all", all_rule="average"), average)
    # the model called with a mask_class input computes the same as the predictor's oracle pass
    np.testing.assert_allclose(model.predict([x, y], verbose=0), numpy_outputs(model, x, masks[y], scale),
                               rtol=1e-4, atol=1e-6)


def test_only_oracle_reads_labels(rng):
    model = small_model(rng)
    x = rng.normal(size=(50, 6)).astype("float32")
    y = rng.integers(0, CLASSES, 50)
    with pytest.raises(ValueError, match="oracle.*needs labels"):
        predict_classes(model, x, "oracle")
    for mode in ("none", "predicted", "all"):
        with pytest.raises(ValueError, match="Only mode 'oracle' reads labels"):
            predict_classes(model, x, mode, labels=y)
    # the oracle really depends on the labels it is given
    oracle = predict_classes(model, x, "oracle", y)
    assert not np.array_equal(oracle, predict_classes(model, x, "oracle", (y + 1) % CLASSES))


def test_decide_from_all_masks_by_hand():
    per_mask = np.array([[[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]],    # mask 0
                         [[0.1, 0.6, 0.3], [0.1, 0.3, 0.6]],    # mask 1
                         [[0.3, 0.3, 0.4], [0.7, 0.1, 0.2]]])   # mask 2
    # consistent: image 0 -> max(0.5, 0.6, 0.4) = mask 1; image 1 -> max(0.2, 0.3, 0.2) = mask 1
    np.testing.assert_array_equal(decide_from_all_masks(per_mask, "consistent"), [1, 1])
    # average: image 0 -> (0.3, 0.433, 0.267) -> 1; image 1 -> (0.333, 0.2, 0.467) -> 2
    np.testing.assert_array_equal(decide_from_all_masks(per_mask, "average"), [1, 2])
    with pytest.raises(ValueError, match=r"\(K, N, K\).*\(2, 2, 3\)"):
        decide_from_all_masks(per_mask[:2])


def test_keras_file_round_trip_keeps_masks_and_predictions(rng, tmp_path):
    model = small_model(rng, rescale=False, refresh="step")
    x = rng.normal(size=(40, 6)).astype("float32")
    y = rng.integers(0, CLASSES, 40)
    model.save(tmp_path / "nsd.keras")
    loaded = keras.models.load_model(tmp_path / "nsd.keras")
    layer = loaded.get_layer("dropout")
    assert isinstance(layer, NSDropout) and layer.refresh_schedule == "step" and not layer.rescale_inference
    np.testing.assert_array_equal(layer.get_class_masks(), model.get_layer("dropout").get_class_masks())
    modes = ("none", "predicted", "all", "oracle")
    before = NSDropoutPredictor(model).predict_classes_by_mode(x, modes, y)
    after = NSDropoutPredictor(loaded).predict_classes_by_mode(x, modes, y)
    for mode in modes:
        np.testing.assert_array_equal(before[mode], after[mode])
    config = model.get_layer("dropout").get_config()
    assert NSDropout.from_config(config).get_config() == config


def test_epoch_callback_refreshes_from_the_current_weights(rng):
    model = small_model(rng, refresh="epoch")
    model.compile("adam", "sparse_categorical_crossentropy")
    x, x_mask = rng.normal(size=(90, 6)).astype("float32"), rng.normal(size=(30, 6)).astype("float32")
    y, y_mask = np.arange(90) % CLASSES, np.arange(30) % CLASSES
    callback = NSDropoutRefresh((x_mask, y_mask), train_data=(x, y))
    model.fit([x, y], y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])
    kernel, bias = (np.asarray(v) for v in model.get_layer("hidden_1").weights)
    expected = numpy_class_masks(relu(x @ kernel + bias), y, relu(x_mask @ kernel + bias), y_mask)
    np.testing.assert_array_equal(model.get_layer("dropout").get_class_masks(), expected)
    assert float(np.asarray(model.get_layer("dropout").epoch_counts).sum()) == 0  # each epoch starts afresh


def test_epoch_callback_without_train_data_uses_the_activations_the_steps_saw(rng):
    model = small_model(rng, refresh="epoch")
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")  # weights stay fixed
    x, x_mask = rng.normal(size=(90, 6)).astype("float32"), rng.normal(size=(30, 6)).astype("float32")
    y, y_mask = np.arange(90) % CLASSES, np.arange(30) % CLASSES
    layer = model.get_layer("dropout")
    initial = layer.get_class_masks()
    keep = y != 2  # class 2 never seen by a training step: its mask must stay as it was
    model.fit([x[keep], y[keep]], y[keep], batch_size=16, epochs=1, verbose=0,
              callbacks=[NSDropoutRefresh((x_mask, y_mask))])
    kernel, bias = (np.asarray(v) for v in model.get_layer("hidden_1").weights)
    expected = numpy_class_masks(relu(x[keep] @ kernel + bias), y[keep], relu(x_mask @ kernel + bias), y_mask,
                                 previous=initial)
    np.testing.assert_array_equal(layer.get_class_masks(), expected)
    np.testing.assert_array_equal(layer.get_class_masks()[2], initial[2])
    assert float(np.asarray(layer.epoch_counts).sum()) == 0  # accumulators reset for the next epoch


def test_step_callback_stores_the_mask_split_class_means(rng):
    model = small_model(rng, refresh="step")
    model.compile("adam", "sparse_categorical_crossentropy")
    x, x_mask = rng.normal(size=(60, 6)).astype("float32"), rng.normal(size=(30, 6)).astype("float32")
    y, y_mask = np.arange(60) % CLASSES, np.arange(30) % CLASSES
    model.fit([x, y], y, batch_size=60, epochs=1, verbose=0, callbacks=[NSDropoutRefresh((x_mask, y_mask))])
    kernel, bias = (np.asarray(v) for v in model.get_layer("hidden_1").weights)
    hidden = relu(x_mask @ kernel + bias)
    expected = np.stack([hidden[y_mask == c].mean(axis=0) for c in range(CLASSES)])
    np.testing.assert_allclose(np.asarray(model.get_layer("dropout").mask_split_means), expected, rtol=1e-5,
                               atol=1e-6)


# -------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("rate", [0, 1, 1.5, -0.1, "0.2", True, None])
def test_rate_outside_the_open_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match=f"rate must be a number in \\(0, 1\\). Received: rate={rate!r}"):
        NSDropout(rate, CLASSES)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 0}, r"num_classes must be an integer >= 1 \(rows of the mask table; 1: one class-free "
                         r"mask\). Received: num_classes=0"),
    ({"num_classes": 2.5}, "num_classes must be an integer >= 1"),
    ({"num_classes": 3, "refresh": "batch"}, "refresh must be one of .* Received: refresh='batch'"),
])
def test_bad_constructor_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NSDropout(0.5, **kwargs)


def test_a_rate_that_drops_no_unit_is_refused():
    with pytest.raises(ValueError, match=r"rate=0.02 drops round\(16 \* 0.02\) = 0 of 16 units"):
        NSDropout(0.02, 4).build([(None, 16), (None,)])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="two inputs"):
        NSDropout(0.2, 3).build((None, 10))
    with pytest.raises(ValueError, match=r"\(batch, units\).*\(None, 4, None\)"):
        NSDropout(0.2, 3).build([(None, 4, None), (None,)])
    with pytest.raises(ValueError, match=r"\(batch, units\).*\(None,\)"):
        NSDropout(0.2, 3).build([(None,), (None,)])
    with pytest.raises(ValueError, match=r"mask_class must have shape \(batch,\).*\(None, 3\)"):
        NSDropout(0.2, 3).build([(None, 10), (None, 3)])
    with pytest.raises(ValueError, match="drops round.*every unit"):
        NSDropout(0.8, 3).build([(None, 2), (None,)])


def test_bad_labels_and_activations_are_refused_with_what_was_received(rng):
    layer = built_layer()
    h, y = data(rng, 30)
    with pytest.raises(ValueError, match=r"train_labels must lie in \[0, 3\). Received out of range: \[3, 7\]"):
        layer.refresh(h, np.where(y == 0, 7, np.where(y == 1, 3, y)), h, y)
    with pytest.raises(ValueError, match=r"Received no sample of classes \[1\]"):
        layer.refresh(h, y, h[y != 1], y[y != 1])
    with pytest.raises(ValueError, match=r"mask_activations must have shape \(N, 10\) or \(N, ..., 10\).*"
                                         r"Received: shape \(30, 9\)"):
        layer.refresh(h, y, h[:, :9], y)
    with pytest.raises(ValueError, match="has 29 labels for 30 rows"):
        layer.refresh(h, y[:29], h, y)
    with pytest.raises(ValueError, match=r"mask_class must lie in \[-1, 3\).*\[5\]"):
        layer([h, np.full(30, 5)], training=False)
    with pytest.raises(ValueError, match=r"masks must have shape \(3, 10\). Received: \(3, 9\)"):
        layer.set_class_masks(np.ones((3, 9)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        layer.set_class_masks(np.full((3, 10), 0.5))
    with pytest.raises(ValueError, match="not built yet"):
        NSDropout(0.2, 3).get_class_masks()


def test_callbacks_and_predictor_refuse_what_they_cannot_use(rng):
    model = small_model(rng, refresh="epoch")
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = rng.normal(size=(30, 6)).astype("float32"), np.arange(30) % CLASSES
    with pytest.raises(ValueError, match=r"no sample of classes \[2\]"):
        model.fit([x, y], y, epochs=1, verbose=0,
                  callbacks=[NSDropoutRefresh((x[y != 2], y[y != 2]), train_data=(x, y))])
    with pytest.raises(ValueError, match="modes must be among"):
        NSDropoutPredictor(model).predict_classes(x, "mean")
    with pytest.raises(ValueError, match="exactly one NSDropout layer.*Received: 0"):
        NSDropoutPredictor(models.dropout_mlp(6, (4,), 3, dropout="dropout"))


# ------------------------------------------------------------------------------------------- feature maps
def feature_maps(rng, n, size=4):
    h = rng.normal(size=(n, size, size, UNITS)).astype("float32")
    return h, rng.permutation(np.arange(n) % CLASSES)


def test_feature_maps_get_one_mask_per_class_over_channels_from_their_spatial_means(rng):
    """(batch, H, W, C): a channel's class statistic is its mean over the positions; the class mask keeps or
    drops whole channels, in training and at inference."""
    layer = NSDropout(RATE, CLASSES, refresh="never")
    train_h, train_y = feature_maps(rng, 30)
    mask_h, mask_y = feature_maps(rng, 12)
    layer([train_h[:2], train_y[:2].astype("float32")])  # builds on (batch, 4, 4, C)
    layer.refresh(train_h, train_y, mask_h, mask_y)
    expected = numpy_class_masks(train_h.mean(axis=(1, 2)), train_y, mask_h.mean(axis=(1, 2)), mask_y)
    np.testing.assert_array_equal(layer.get_class_masks(), expected)
    routed = expected[train_y][:, None, None, :]
    np.testing.assert_allclose(to_numpy(layer([train_h, train_y.astype("float32")], training=True)),
                               train_h * routed / (1 - RATE), rtol=1e-6)
    classes = np.where(np.arange(30) % 4 == 0, -1, train_y)
    by_hand = np.where(classes[:, None, None, None] >= 0,
                       train_h * expected[np.maximum(classes, 0)][:, None, None, :] / (1 - RATE), train_h)
    np.testing.assert_allclose(to_numpy(layer([train_h, classes.astype("float32")], training=False)), by_hand,
                               rtol=1e-6)


def test_feature_maps_before_the_first_refresh_drop_whole_channels(rng):
    layer = NSDropout(0.5, CLASSES, seed=3)
    h = np.abs(rng.normal(size=(400, 3, 3, UNITS))).astype("float32") + 0.1
    out = to_numpy(layer([h, (np.arange(400) % CLASSES).astype("float32")], training=True))
    kept = out != 0
    assert np.all(kept.all(axis=(1, 2)) | ~kept.any(axis=(1, 2)))  # a channel is kept everywhere or nowhere
    assert abs((~kept.any(axis=(1, 2))).mean() - 0.5) < 0.05
    np.testing.assert_allclose(out[kept], h[kept] / 0.5, rtol=1e-6)


def test_feature_maps_step_and_epoch_schedules_use_the_spatial_means(rng):
    h, y = feature_maps(rng, 24)
    mask_h, mask_y = feature_maps(rng, 9)
    step = NSDropout(RATE, CLASSES, refresh="step")
    step([h[:2], y[:2].astype("float32")])
    step.set_mask_split(mask_h, mask_y)
    compiled(lambda a, b: step([a, b], training=True), step.variables)(h, y.astype("float32"))
    expected = numpy_class_masks(h.mean(axis=(1, 2)), y, mask_h.mean(axis=(1, 2)), mask_y)
    np.testing.assert_array_equal(step.get_class_masks(), expected)
    epoch = NSDropout(RATE, CLASSES, refresh="epoch")
    epoch([h[:12], y[:12].astype("float32")], training=True)
    epoch([h[12:], y[12:].astype("float32")], training=True)
    assert epoch.refresh_from_epoch(mask_h, mask_y) == []
    np.testing.assert_array_equal(epoch.get_class_masks(), expected)


def test_the_predictor_runs_a_cnn_with_nsdropout_on_its_feature_maps(rng):
    x, routes = keras.Input((8, 8, 1)), keras.Input(())
    maps = keras.layers.Conv2D(UNITS, 3, activation="relu", name="conv")(x)
    dropped = NSDropout(RATE, CLASSES, refresh="never", name="dropout")([maps, routes])
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(keras.layers.GlobalAveragePooling2D()(dropped))
    model = keras.Model([x, routes], outputs)
    masks = random_masks(rng)
    model.get_layer("dropout").set_class_masks(masks)
    images = rng.normal(size=(7, 8, 8, 1)).astype("float32")
    plain, per_mask = NSDropoutPredictor(model).outputs_under_every_mask(images)
    conv = model.get_layer("conv")
    head = keras.Model(x, conv.output)
    feature = to_numpy(head(images))
    dense = model.layers[-1]
    w, b = (to_numpy(v) for v in dense.weights)
    for k in range(CLASSES):
        pooled = (feature * masks[k] / (1 - RATE)).mean(axis=(1, 2))
        logits = pooled @ w + b
        np.testing.assert_allclose(per_mask[k], np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                                   rtol=1e-5, atol=1e-6)
    logits = feature.mean(axis=(1, 2)) @ w + b
    np.testing.assert_allclose(plain, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-5, atol=1e-6)

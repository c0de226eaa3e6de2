"""Label-free NSDropout routing checked against independent computations: nearest centres by brute force, the
model's own unmasked prediction through the full model (mask_class -1), masks from NumPy means."""

import keras
import numpy as np
import pytest

from masklab import models, training
from masklab.layers import (ClusterRouter, NSDropoutPredictor, NSDropoutRefresh, NSDropoutRouting,
                            PredictedClassRouter, SingleMaskRouter, fit_routed, predict_routed)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(120, 8)).astype(np.float32)
Y = RNG.integers(0, 3, 120)
X_MASK = RNG.normal(size=(40, 8)).astype(np.float32)


def compiled(model):
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_cluster_router_routes_to_the_nearest_centre():
    router = ClusterRouter(4, seed=0)
    router.fit(None, X, epoch=0)
    brute = np.argmin(((X[:, None, :] - router.centers[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(router.route(None, X), brute)
    maps = RNG.normal(size=(30, 3, 3, 8)).astype(np.float32)  # feature maps: channel means
    np.testing.assert_array_equal(router.route(None, maps), router.route(None, maps.mean(axis=(1, 2))))


def test_cluster_router_refits_warm_and_keeps_its_cluster_identities():
    router = ClusterRouter(3, refit_every=2, seed=0)
    router.fit(None, X, epoch=0)
    first = router.get_state()
    router.fit(None, X + 0.01, epoch=1)  # not due: unchanged
    np.testing.assert_array_equal(router.centers, first)
    before = router.route(None, X)
    router.fit(None, X + 0.01, epoch=2)  # refit from the current centres: cluster k stays cluster k
    nearest_old = np.argmin(((router.centers[:, None] - first[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest_old, np.arange(3))
    assert np.mean(router.route(None, X + 0.01) == before) > 0.9
    router.set_state(first)
    np.testing.assert_array_equal(router.centers, first)


def test_predicted_class_routing_and_predict_routed_match_the_full_model():
    training.enable_determinism(0)
    model = compiled(models.dropout_mlp(8, (10, 6), 3, rate=0.3, seed=0))
    routing = NSDropoutRouting(PredictedClassRouter(), X, X_MASK)
    fit_routed(model, routing, Y, epochs=3)
    # independent: the whole model with no mask (-1), then the whole model with each sample's routed mask
    unmasked = model.predict([X, -np.ones(len(X), np.float32)], verbose=0).argmax(-1)
    np.testing.assert_array_equal(routing.train_routes, unmasked)
    routed = model.predict([X, unmasked.astype(np.float32)], verbose=0)
    np.testing.assert_allclose(predict_routed(NSDropoutPredictor(model), PredictedClassRouter(), X), routed,
                               atol=1e-6)
    assert [c.sum() for c in routing.route_counts] == [len(X)] * 4  # train begin + 3 epochs


def test_single_mask_step_schedule_drops_the_largest_train_minus_mask_split_differences():
    training.enable_determinism(1)
    model = compiled(models.dropout_mlp(8, (10, 6), 3, rate=0.3, mask_classes=1, seed=0))
    routing = NSDropoutRouting(SingleMaskRouter(), X, X_MASK)
    callbacks = keras.callbacks.CallbackList([routing], model=model)
    callbacks.on_train_begin()
    model.train_on_batch([X, routing.train_routes.astype(np.float32)], Y)
    callbacks.on_epoch_end(0)
    head = keras.Model(model.inputs[0], model.get_layer("hidden_1").output)
    train_mean = head.predict(X, verbose=0).mean(0)  # weights before the next step: what that step sees
    mask_mean = head.predict(X_MASK, verbose=0).mean(0)
    layer = model.get_layer("dropout")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.mask_split_means)[0], mask_mean, atol=1e-5)
    model.train_on_batch([X, np.zeros(len(X), np.float32)], Y)
    expected = np.ones(10, np.float32)
    expected[np.argsort(-(train_mean - mask_mean), kind="stable")[:3]] = 0  # round(10 * 0.3) dropped
    np.testing.assert_array_equal(layer.get_class_masks()[0], expected)


def test_cluster_routing_with_mini_batches_and_the_epoch_schedule_on_feature_maps():
    training.enable_determinism(0)
    images = RNG.random((48, 28, 28, 1)).astype(np.float32)
    labels = np.arange(48) % 4
    model = compiled(models.seed_cnn((28, 28, 1), 4, dropout="nsdropout", refresh="epoch", seed=0))
    router = ClusterRouter(4, seed=0)
    routing = NSDropoutRouting(router, images, images[:24])
    history = fit_routed(model, routing, labels, epochs=2, batch_size=16, seed=0)
    assert len(history) == 2 and model.get_layer("dropout").is_refreshed
    predictor = NSDropoutPredictor(model)
    hidden = predictor.hidden(images)
    np.testing.assert_array_equal(routing.train_routes, router.route(predictor, hidden))
    masks = model.get_layer("dropout").get_class_masks()
    assert masks.shape == (4, 64) and set(np.unique(masks)) <= {0.0, 1.0}
    # the masks belong to the end-of-epoch router state: NumPy means of the channel means per route
    head = keras.Model(model.inputs[0], model.get_layer("pool_2").output)
    train_stats, mask_stats = head.predict(images, verbose=0).mean((1, 2)), head.predict(images[:24], verbose=0).mean((1, 2))
    nearest = lambda p: np.argmin(((p[:, None] - router.centers[None]) ** 2).sum(-1), axis=1)  # noqa: E731
    train_routes, mask_routes = nearest(train_stats), nearest(mask_stats)
    for k in range(4):
        if k in routing.absent_routes.get(2, []):
            continue
        difference = train_stats[train_routes == k].mean(0) - mask_stats[mask_routes == k].mean(0)
        dropped = masks[k] == 0
        assert dropped.sum() == 13  # round(64 * 0.2): the 13 largest differences (up to float32 near-ties)
        assert difference[dropped].min() >= difference[~dropped].max() - 1e-6


def test_a_route_without_mask_split_samples_keeps_its_mask_and_is_recorded():
    training.enable_determinism(0)
    model = compiled(models.dropout_mlp(8, (10, 6), 3, rate=0.3, mask_classes=3, refresh="epoch", seed=0))
    routing = NSDropoutRouting(ClusterRouter(3, seed=0), X, X_MASK[:1])  # one mask-split sample: 2 routes empty
    fit_routed(model, routing, Y, epochs=2, batch_size=40)
    assert set(routing.absent_routes) == {1, 2} and len(routing.absent_routes[2]) >= 2
    masks = model.get_layer("dropout").get_class_masks()
    for k in routing.absent_routes[2]:
        if all(k in routing.absent_routes[e] for e in (1, 2)):
            np.testing.assert_array_equal(masks[k], np.ones(10))  # never refreshed: keeps every unit
    assert [c.sum() for c in routing.mask_route_counts] == [1, 1]


def test_class_modes_are_refused_when_the_masks_are_not_one_per_output_class():
    model = models.dropout_mlp(8, (10, 6), 3, rate=0.3, mask_classes=4, seed=0)
    predictor = NSDropoutPredictor(model)
    with pytest.raises(ValueError, match=r"Modes \['predicted'\] read mask k as the mask of output class k, but "
                                         r"layer 'dropout' has num_classes=4 masks for 3 outputs"):
        predictor.predict_classes(X, "predicted")
    assert predictor.predict_classes(X, "none").shape == (len(X),)


def test_bad_routing_setups_are_refused():
    model = compiled(models.dropout_mlp(8, (10, 6), 3, rate=0.3, seed=0))
    with pytest.raises(ValueError, match="SingleMaskRouter routes to 1 masks, but NSDropout layer 'dropout' has "
                                         "num_classes=3: build the layer with num_classes=1"):
        fit_routed(model, NSDropoutRouting(SingleMaskRouter(), X, X_MASK), Y, epochs=1)
    with pytest.raises(ValueError, match="ClusterRouter routes to 5 masks"):
        fit_routed(model, NSDropoutRouting(ClusterRouter(5), X, X_MASK), Y, epochs=1)
    with pytest.raises(ValueError, match="router must be a masklab Router. Received: str"):
        NSDropoutRouting("predicted", X, X_MASK)
    with pytest.raises(ValueError, match="y has 5 labels for 120 training inputs"):
        fit_routed(model, NSDropoutRouting(PredictedClassRouter(), X, X_MASK), Y[:5], epochs=1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None .* Received: batch_size=0"):
        fit_routed(model, NSDropoutRouting(PredictedClassRouter(), X, X_MASK), Y, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="routing must be an NSDropoutRouting callback. Received: NSDropoutRefresh"):
        fit_routed(model, NSDropoutRefresh((X_MASK, Y[:40])), Y, epochs=1)
    with pytest.raises(ValueError, match="num_clusters must be an integer >= 2. Received: num_clusters=1"):
        ClusterRouter(1)
    never = compiled(models.dropout_mlp(8, (10,), 3, rate=0.3, refresh="never", seed=0))
    with pytest.raises(ValueError, match="refresh='never'"):
        fit_routed(never, NSDropoutRouting(PredictedClassRouter(), X, X_MASK), Y, epochs=1)
    with pytest.raises(ValueError, match="no centres yet"):
        ClusterRouter(3).route(None, X)
    with pytest.raises(ValueError, match="seed must be an integer >= 0. Received: seed=None"):
        ClusterRouter(3, seed=None)
    with pytest.raises(ValueError, match=r"state must be \(3, units\) centres or None. Received: shape \(2, 8\)"):
        ClusterRouter(3).set_state(np.zeros((2, 8)))
    fitted = ClusterRouter(3)
    fitted.fit(None, X, 0)
    with pytest.raises(ValueError, match="hidden has 5 units .* the centres 8"):
        fitted.route(None, X[:, :5])
    with pytest.raises(ValueError, match=r"mask_x must have shape \(N, 8\), the model's input 'pixels'. "
                                         r"Received: shape \(40, 4, 2\)"):
        fit_routed(model, NSDropoutRouting(PredictedClassRouter(), X, X_MASK.reshape(40, 4, 2)), Y, epochs=1)
    with pytest.raises(ValueError, match="NSDropoutRouting was passed to model.fit"):
        model.fit([X, np.zeros(len(X), np.float32)], Y, epochs=1, verbose=0,
                  callbacks=[NSDropoutRouting(PredictedClassRouter(), X, X_MASK)])
    with pytest.raises(ValueError, match="mask_x contains NaN"):
        NSDropoutRouting(PredictedClassRouter(), X, np.full((2, 8), np.nan, np.float32))

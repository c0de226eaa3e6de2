"""CurriculumDropout and TargetedDropout checked against NumPy: rates, targets, scaling, channels, config."""

import keras
import numpy as np
import pytest

from masklab import models
from masklab.layers import CurriculumDropout, TargetedDropout
from tests.backend_tools import to_numpy


def test_curriculum_rate_follows_the_exponential_ramp_and_counts_training_calls():
    layer = CurriculumDropout(0.4, gamma=0.05, seed=0)
    x = np.ones((4000, 50), np.float32)
    layer.build(x.shape)
    for t in range(4):
        expected_rate = 0.4 * (1 - np.exp(-0.05 * t))
        assert float(to_numpy(layer.current_rate())) == pytest.approx(expected_rate, abs=1e-6)
        out = to_numpy(layer(x, training=True))
        dropped = (out == 0).mean()
        # binomial tolerance: 5 standard deviations of 200 000 draws
        assert abs(dropped - expected_rate) < 5 * np.sqrt(max(expected_rate * (1 - expected_rate), 1e-9) / x.size)
        np.testing.assert_allclose(out[out != 0], 1 / (1 - expected_rate), rtol=1e-6)  # inverted dropout
    assert float(to_numpy(layer.iterations)) == 4
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)  # identity at inference, no count
    assert float(to_numpy(layer.iterations)) == 4


def test_curriculum_drops_whole_channels_of_feature_maps():
    layer = CurriculumDropout(0.5, gamma=10.0, seed=1)
    layer.build((None, 3, 3, 40))
    layer.iterations.assign(100.0)
    out = to_numpy(layer(np.ones((20, 3, 3, 40), np.float32), training=True))
    per_channel = out.reshape(20, 9, 40)
    assert np.all(per_channel == per_channel[:, :1])  # a channel is kept or dropped at every position
    assert 0 < (per_channel[:, 0] == 0).mean() < 1


def test_targeted_dropout_drops_only_the_lowest_magnitude_units_without_rescaling():
    rng = np.random.default_rng(0)
    magnitudes = rng.permutation(20).astype(np.float32) + 1  # distinct unit magnitudes
    x = np.tile(magnitudes, (3000, 1)) * rng.choice([-1, 1], size=(3000, 20))
    layer = TargetedDropout(0.5, targeted_fraction=0.3, seed=0)
    out = to_numpy(layer(x, training=True))
    targets = np.argsort(magnitudes)[:6]  # round(20 * 0.3) smallest mean |x|, found by NumPy
    others = np.setdiff1d(np.arange(20), targets)
    np.testing.assert_array_equal(out[:, others], x[:, others])  # never dropped, never rescaled
    kept = out[:, targets] != 0
    np.testing.assert_array_equal(out[:, targets][kept], x[:, targets][kept])
    assert abs((~kept).mean() - 0.5) < 5 * np.sqrt(0.25 / kept.size)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)


def test_targeted_dropout_targets_whole_channels_by_their_mean_magnitude():
    x = np.ones((10, 4, 4, 6), np.float32) * np.array([5, 1, 4, 2, 6, 3], np.float32)
    layer = TargetedDropout(0.99, targeted_fraction=0.5, seed=3)
    out = to_numpy(layer(x, training=True))
    assert np.all(out[..., [0, 2, 4]] == x[..., [0, 2, 4]])  # the three largest channels are never targeted
    targeted = out[..., [1, 3, 5]].reshape(10, 16, 3)
    assert np.all(targeted == targeted[:, :1]) and (targeted == 0).mean() > 0.8


@pytest.mark.parametrize("make, message", [
    (lambda: CurriculumDropout(1.0, 0.1), r"rate must be a number in \(0, 1\). Received: rate=1.0"),
    (lambda: CurriculumDropout(0.2, 0), "gamma must be a positive number .* Received: gamma=0"),
    (lambda: CurriculumDropout(0.2, float("nan")), "gamma must be a positive number"),
    (lambda: TargetedDropout(0.2, 1.5), r"targeted_fraction must be a number in \(0, 1\). Received: "
                                         r"targeted_fraction=1.5"),
    (lambda: TargetedDropout(0.2, 0.5, magnitude="weight"), "magnitude must be one of .* Received: "
                                                              "magnitude='weight'"),
    (lambda: TargetedDropout(0.5, 0.1).build((None, 4)), r"round\(4 \* 0.1\) = 0 units"),
    (lambda: CurriculumDropout(0.5, 0.1).build((None,)), "inputs \\(batch, units\\)"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kind, options", [("curriculum", {"gamma": 0.1}), ("targeted", {"targeted_fraction": 0.5})])
def test_models_with_them_save_and_load(kind, options, tmp_path):
    model = models.dropout_mlp(6, (8, 4), 3, dropout=kind, rate=0.3, dropout_options=options, seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32), np.arange(16) % 3
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    if kind == "curriculum":  # the count advances inside the compiled train step: 2 steps x 3 epochs
        assert float(to_numpy(model.get_layer("dropout").iterations)) == 6
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("dropout").get_config() == model.get_layer("dropout").get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_dropout_options_must_match_the_kind():
    with pytest.raises(ValueError, match=r"dropout='curriculum' takes dropout_options with exactly the keys "
                                         r"\['gamma'\]. Received: \[\]"):
        models.dropout_mlp(6, (8,), 3, dropout="curriculum")
    with pytest.raises(ValueError, match="dropout must be one of"):
        models.seed_cnn(dropout="spatial")

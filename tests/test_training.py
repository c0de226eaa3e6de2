"""The training loop: determinism, epoch selection on val only, the tf.distribute path (keras.distribution:
test_distribution.py)."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest

from masklab import models, training


@pytest.fixture(scope="module")
def tiny_problem():
    """A learnable 3-class problem: the class is the argmax of three fixed projections of the input."""
    rng = np.random.default_rng(0)
    projections = rng.normal(size=(20, 3))
    x = rng.normal(size=(600, 20)).astype("float32")
    y = np.argmax(x @ projections, axis=1)
    return (x[:400], y[:400]), (x[400:], y[400:])


def build():
    return models.mlp(20, 16, 3)


def test_two_runs_with_the_same_seed_are_identical(tiny_problem):
    train_data, val_data = tiny_problem
    a = training.train(build, train_data, val_data, epochs=3, batch_size=32, seed=7, verbose=0)
    b = training.train(build, train_data, val_data, epochs=3, batch_size=32, seed=7, verbose=0)
    c = training.train(build, train_data, val_data, epochs=3, batch_size=32, seed=8, verbose=0)
    assert a.history.equals(b.history)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not a.history[["loss"]].equals(c.history[["loss"]])


def test_steps_per_execution_changes_no_number(tiny_problem):
    """Several steps per compiled call (the default, 32): the same weights and history as one step per call, and
    as a plain model.fit of the same model."""
    train_data, val_data = tiny_problem
    runs = [training.train(build, train_data, val_data, epochs=3, batch_size=32, seed=7, verbose=0,
                           steps_per_execution=spe, restore_best=False) for spe in (1, None)]
    keras.utils.set_random_seed(7)
    plain = build()
    plain.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    plain.fit(*train_data, batch_size=32, epochs=3, verbose=0)
    for run in runs:
        for w, reference in zip(run.model.get_weights(), plain.get_weights()):
            np.testing.assert_array_equal(w, reference)
    assert runs[0].history.equals(runs[1].history)


def test_best_epoch_is_chosen_on_val_and_its_weights_restored(tiny_problem):
    train_data, val_data = tiny_problem
    result = training.train(build, train_data, val_data, epochs=6, batch_size=16, seed=1, learning_rate=0.05,
                            verbose=0)
    val_acc = result.history["val_accuracy"].to_numpy()
    assert result.best_epoch == int(np.argmax(val_acc)) + 1  # argmax: the earliest of ties
    assert result.history["is_best"].sum() == 1
    # the returned model really holds that epoch's weights: recompute val accuracy with NumPy
    w1, b1, w2, b2 = result.model.get_weights()
    logits = np.maximum(val_data[0] @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(np.mean(np.argmax(logits, 1) == val_data[1]), val_acc[result.best_epoch - 1])


def test_restore_best_false_keeps_the_last_epoch(tiny_problem):
    train_data, val_data = tiny_problem
    result = training.train(build, train_data, val_data, epochs=3, batch_size=16, seed=1, restore_best=False,
                            verbose=0)
    scores = training.evaluate(result.model, *val_data)
    np.testing.assert_allclose(scores["accuracy"], result.history["val_accuracy"].iloc[-1], rtol=1e-6)


def test_a_compiled_model_keeps_its_own_settings(tiny_problem):
    train_data, val_data = tiny_problem
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    before = [w.copy() for w in model.get_weights()]
    result = training.train(model, train_data, val_data, epochs=1, verbose=0)
    for w0, w1 in zip(before, result.model.get_weights()):
        np.testing.assert_array_equal(w0, w1)  # learning rate 0: nothing moved


@pytest.mark.parametrize("kwargs, match", [
    (dict(monitor="accuracy"), "monitor='accuracy'"),
    (dict(epochs=0), "epochs=0"),
    (dict(steps_per_execution=0), "steps_per_execution=0"),
])
def test_bad_arguments_are_refused(tiny_problem, kwargs, match):
    train_data, val_data = tiny_problem
    with pytest.raises(ValueError, match=match):
        training.train(build, train_data, val_data, **{"epochs": 1, **kwargs})


def test_mismatched_labels_are_refused(tiny_problem):
    (x, y), val_data = tiny_problem
    with pytest.raises(ValueError, match=r"inputs of lengths \[400\], 399 labels"):
        training.train(build, (x, y[:-1]), val_data, epochs=1)


@pytest.mark.tensorflow_only
def test_a_strategy_needs_a_model_builder(tiny_problem):
    import tensorflow as tf

    train_data, val_data = tiny_problem
    with pytest.raises(ValueError, match="Received: a built keras.Model"):
        training.train(build(), train_data, val_data, epochs=1, strategy=tf.distribute.get_strategy())


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from masklab import models, training
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    projections = rng.normal(size=(20, 3))
    x = rng.normal(size=(600, 20)).astype("float32")
    y = np.argmax(x @ projections, axis=1)
    result = training.train(lambda: models.mlp(20, 16, 3), (x[:400], y[:400]), (x[400:], y[400:]),
                            epochs=4, batch_size=32, seed=0, learning_rate=0.01, strategy=strategy, verbose=0)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "val_accuracy": result.history["val_accuracy"].tolist(), "best": result.best_epoch}))
""")


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_mirrored_strategy_on_two_logical_cpus():
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert max(report["val_accuracy"]) > 0.6  # it learned (chance is 1/3)
    assert report["val_accuracy"][report["best"] - 1] == max(report["val_accuracy"])


def test_recalibrate_batchnorm_averages_the_batch_statistics():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(dense(inputs)))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(100, 4)).astype("float32")
    weights_before = [w.copy() for w in model.get_layer("dense").get_weights()]
    assert training.recalibrate_batchnorm(model, x, batch_size=32) == 1
    w, b = model.get_layer("dense").get_weights()
    h = x @ w + b
    batches = [h[i:i + 32] for i in range(0, 100, 32)]  # 32, 32, 32, 4
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), np.mean([c.mean(axis=0) for c in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), np.mean([c.var(axis=0) for c in batches], axis=0),
                               rtol=1e-4)
    assert bn.momentum == 0.99
    for before, after in zip(weights_before, model.get_layer("dense").get_weights()):
        np.testing.assert_array_equal(before, after)
    assert training.recalibrate_batchnorm(models.mlp(4, 3, 2), x) == 0


def test_tensorboard_log_dir_gets_train_and_val_scalars_per_epoch(tiny_problem, tmp_path):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_data, val_data = tiny_problem
    result = training.train(build, train_data, val_data, epochs=3, batch_size=32, seed=0, verbose=0,
                            log_dir=tmp_path / "logs")
    for split, column in (("train", "loss"), ("validation", "val_loss")):
        events = EventAccumulator(str(tmp_path / "logs" / split), size_guidance={"tensors": 0})
        events.Reload()
        values = {tag: [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
                  for tag in events.Tags()["tensors"] if tag.startswith("epoch_")}
        assert "epoch_loss" in values and "epoch_accuracy" in values, f"{split}: {sorted(values)}"
        np.testing.assert_allclose(values["epoch_loss"], result.history[column], rtol=1e-5)


def test_live_dir_logs_every_epoch_with_dvclive(tmp_path):
    """``live_dir``: DVCLive's TSV files, one row per epoch (1-based), equal to the history ``train`` returns."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    build = lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])  # noqa: E731
    result = training.train(build, (x, y), (x[:40], y[:40]), epochs=3, seed=0, live_dir=tmp_path / "live",
                            verbose=0)
    for split, prefix in (("train", ""), ("eval", "val_")):
        for metric in ("accuracy", "loss"):
            logged = pd.read_csv(tmp_path / "live" / "plots" / "metrics" / split / f"{metric}.tsv", sep="\t")
            np.testing.assert_array_equal(logged["step"], [1, 2, 3])
            np.testing.assert_allclose(logged[metric], result.history[prefix + metric], rtol=1e-6)
    assert not (tmp_path / "live" / "dvc.yaml").exists() and not (tmp_path / "live" / "report.html").exists()

"""Several devices and several processes: ``training.train(distribution=...)`` (keras.distribution on JAX) and
batched ablation split over the devices of a distribution, each against a single-device run of the same work.

The JAX run of the suite (``make test``) sees two CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``,
set by conftest.py); the two-process tests start two JAX processes that meet on 127.0.0.1 (``keras.distribution
.initialize``, CPU collectives over Gloo)."""

import json
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from masklab import ablation, models, training

jax_only = pytest.mark.skipif(keras.config.backend() != "jax", reason="keras.distribution runs on the JAX backend")


def two_devices():
    return keras.config.backend() == "jax" and len(keras.distribution.list_devices()) >= 2


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    projections = rng.normal(size=(20, 3))
    x = rng.normal(size=(320, 20)).astype("float32")
    y = np.argmax(x @ projections, axis=1)
    return (x[:256], y[:256]), (x[256:], y[256:])


def build():
    return models.mlp(20, 16, 3)


# --- GlobalBatches: the same global batches in every process ----------------------------------------------------
def test_global_batches_share_each_global_batch_between_processes_and_reshuffle_from_the_seed():
    x = np.arange(40, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    y = np.arange(40)
    whole = training.GlobalBatches(x, y, 8, seed=3)
    shares = [training.GlobalBatches(x, y, 8, seed=3, process_index=p, process_count=2) for p in (0, 1)]
    assert len(whole) == len(shares[0]) == 5
    for epoch in range(2):
        seen = []
        for b in range(len(whole)):
            xb, yb = whole[b]
            parts = [share[b] for share in shares]
            np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), yb)  # process 0 first, then 1
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), xb)
            np.testing.assert_array_equal(xb[:, 0], yb)  # rows travel with their labels
            seen.extend(yb)
        assert sorted(seen) == list(range(40))  # every sample once per epoch
        expected_order = np.random.default_rng([3, epoch]).permutation(40)
        np.testing.assert_array_equal(np.concatenate([whole[b][1] for b in range(5)]), expected_order)
        for dataset in (whole, *shares):
            dataset.on_epoch_end()
    ordered = training.GlobalBatches(x, y, 16, shuffle=False)
    np.testing.assert_array_equal(ordered[2][1], np.arange(32, 40))  # the last, smaller batch
    multi = training.GlobalBatches({"a": x, "b": x[:, :1]}, y, 8, shuffle=False, process_index=1, process_count=2)
    assert multi[0][0]["a"].shape == (4, 3) and multi[0][0]["b"].shape == (4, 1)


def test_global_batches_refuse_a_batch_the_processes_cannot_share():
    x, y = np.zeros((41, 2), "float32"), np.zeros(41)
    with pytest.raises(ValueError, match=r"last batch of 1 samples cannot be shared equally by 2 processes"):
        training.GlobalBatches(x, y, 8, process_count=2)
    with pytest.raises(ValueError, match=r"process_index must lie in \[0, process_count=2\)"):
        training.GlobalBatches(x[:40], y[:40], 8, process_index=2, process_count=2)


# --- bad arguments -------------------------------------------------------------------------------------------------
def test_a_distribution_is_checked_before_training(problem):
    train_data, val_data = problem
    with pytest.raises(ValueError, match=r"distribution must be a keras.distribution object.*Received: "
                                         r"distribution of type str"):
        training.train(build, train_data, val_data, epochs=1, distribution="DataParallel")
    distribution = keras.distribution.DataParallel()
    if keras.config.backend() != "jax":
        with pytest.raises(ValueError, match=r"needs the JAX backend.*MirroredStrategy.*Received: "
                                             r"backend='tensorflow'"):
            training.train(build, train_data, val_data, epochs=1, distribution=distribution)
        return
    with pytest.raises(ValueError, match=r"pass a function that builds the model.*Received: a built keras.Model"):
        training.train(build(), train_data, val_data, epochs=1, distribution=distribution)


@jax_only
def test_a_batch_the_devices_cannot_share_is_refused_by_name(problem):
    if not two_devices():
        pytest.skip("needs two devices")
    (x, y), val_data = problem
    with pytest.raises(ValueError, match=r"train_data: the last batch holds 27 samples, which the 2 devices of "
                                         r"the distribution's batch axis 'batch' cannot share.*batch_size=32"):
        training.train(build, (x[:251], y[:251]), val_data, epochs=1, batch_size=32,
                       distribution=keras.distribution.DataParallel())
    with pytest.raises(ValueError, match=r"val_data: the last batch holds 1 samples"):
        training.train(build, (x, y), (x[:33], y[:33]), epochs=1, batch_size=32,
                       distribution=keras.distribution.DataParallel())


# --- one process, two devices ------------------------------------------------------------------------------------
@jax_only
def test_data_parallel_on_two_devices_equals_one_device(problem):
    if not two_devices():
        pytest.skip("needs two devices")
    train_data, val_data = problem
    kwargs = dict(epochs=3, batch_size=32, seed=4, learning_rate=0.01, verbose=0)
    single = training.train(build, train_data, val_data, **kwargs)
    parallel = training.train(build, train_data, val_data, distribution=keras.distribution.DataParallel(), **kwargs)
    assert parallel.device == "jax:cpu x2" and keras.distribution.distribution() is None  # scope left behind
    kernel = parallel.model.get_layer("hidden_1").kernel.value
    assert len(kernel.sharding.device_set) == 2  # the weights live on both devices
    for a, b in zip(single.model.get_weights(), parallel.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    pd_cols = ["loss", "val_loss", "val_accuracy"]
    np.testing.assert_allclose(single.history[pd_cols].to_numpy(), parallel.history[pd_cols].to_numpy(), atol=1e-5)
    assert single.best_epoch == parallel.best_epoch


@jax_only
def test_ablation_split_over_two_devices_equals_one_device(problem):
    if not two_devices():
        pytest.skip("needs two devices")
    (x, y), _ = problem
    model = training.train(build, (x, y), (x[:64], y[:64]), epochs=1, seed=1, verbose=0).model
    rng = np.random.default_rng(5)
    masks = (rng.random((7, 16)) > 0.4).astype("float32")  # 7 ablations: padded to 8 on 2 devices
    w1, b1, w2, b2 = model.get_weights()
    hidden = np.maximum(x @ w1 + b1, 0)
    logits = np.einsum("kni,io->kno", hidden[None] * masks[:, None], w2) + b2
    by_hand = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    single = ablation.predict_with_masks(model, "hidden_1", x, masks)
    with keras.distribution.DataParallel().scope():
        split = ablation.predict_with_masks(model, "hidden_1", x, masks)
        accuracy = ablation.predict_with_masks(model, "hidden_1", x, masks, reduce="accuracy", y=y, batch_size=200)
        mean = ablation.predict_with_masks(model, "hidden_1", x, masks, replacement="mean", reference_x=x[:50])
        drops = ablation.single_unit_ablation(model, "hidden_1", x, y)
    runner = ablation.core.runner_for(model, [ablation.runner.Target(model, "hidden_1")], ["zero"])
    assert runner.devices_used == 2  # the last call above split its masks over both devices
    np.testing.assert_allclose(split, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split, single, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(accuracy, (by_hand.argmax(-1) == y).mean(axis=1))
    mean_replaced = hidden[None] * masks[:, None] + (1 - masks[:, None]) * hidden[:50].mean(axis=0)
    logits = mean_replaced @ w2 + b2
    np.testing.assert_allclose(mean, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(drops.accuracy_drop.to_numpy(),
                               ablation.single_unit_ablation(model, "hidden_1", x, y).accuracy_drop.to_numpy())


# --- two processes ----------------------------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.pop("XLA_FLAGS", None)  # one CPU device per process
    import numpy as np
    from masklab import ablation, models, training
    process, port = int(sys.argv[1]), sys.argv[2]
    training.initialize_processes(f"127.0.0.1:{port}", num_processes=2, process_id=process)
    import keras
    rng = np.random.default_rng(0)
    projections = rng.normal(size=(20, 3))
    x = rng.normal(size=(320, 20)).astype("float32")
    y = np.argmax(x @ projections, axis=1)
    result = training.train(lambda: models.mlp(20, 16, 3), (x[:256], y[:256]), (x[256:], y[256:]), epochs=3,
                            batch_size=32, seed=4, learning_rate=0.01, verbose=0,
                            distribution=keras.distribution.DataParallel())
    masks = (np.random.default_rng(5).random((5, 16)) > 0.4).astype("float32")
    with keras.distribution.DataParallel().scope():
        ablated = ablation.predict_with_masks(result.model, "hidden_1", x[:40], masks)
    np.savez(sys.argv[3], *result.model.get_weights(), ablated=ablated,
             val_loss=result.history["val_loss"].to_numpy())
    print(json.dumps({"device": result.device, "best": result.best_epoch}))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@jax_only
@pytest.mark.slow
def test_two_processes_train_and_ablate_as_one_device_on_the_same_global_batches(problem, tmp_path):
    port = free_port()
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(p), str(port), str(tmp_path / f"p{p}.npz")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in (0, 1)]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert all(r["device"] == "jax:cpu x2 (2 processes)" for r in reports)
    # the same global batches on one device: GlobalBatches with one process serves them whole
    (x, y), (xv, yv) = problem
    single = training.train(build, training.GlobalBatches(x, y, 32, seed=4),
                            training.GlobalBatches(xv, yv, 32, shuffle=False), epochs=3, seed=4, learning_rate=0.01,
                            verbose=0)
    assert all(r["best"] == single.best_epoch for r in reports)
    masks = (np.random.default_rng(5).random((5, 16)) > 0.4).astype("float32")
    by_one_device = ablation.predict_with_masks(single.model, "hidden_1", x[:40], masks)
    for p in (0, 1):
        saved = np.load(tmp_path / f"p{p}.npz")
        for i, weight in enumerate(single.model.get_weights()):
            np.testing.assert_allclose(saved[f"arr_{i}"], weight, atol=1e-5, rtol=0)
        np.testing.assert_allclose(saved["val_loss"], single.history["val_loss"].to_numpy(), atol=1e-5)
        np.testing.assert_allclose(saved["ablated"], by_one_device, atol=1e-5)

"""Same weights, same numbers on TensorFlow and JAX: NeuronMask, SparseDense (both implementations), NSDropout
(class masks after a refresh, every inference mode), ``predict_with_masks`` and ``remove_units`` / ``prune``
(cases in cross_backend_cases.py; TensorFlow here, JAX in a subprocess: one backend per process)."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import cross_backend_cases

@pytest.mark.skipif(keras.config.backend() != "tensorflow",
                    reason="compares TensorFlow in this process with JAX in a subprocess")
@pytest.mark.slow
def test_tensorflow_and_jax_give_the_same_numbers_for_the_same_weights(tmp_path):
    pytest.importorskip("jax")
    script = Path(cross_backend_cases.__file__)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join([str(script.parent),
                                                                                  os.environ.get("PYTHONPATH", "")])}
    env.pop("XLA_FLAGS", None)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "jax.npz")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    on_jax = np.load(tmp_path / "jax.npz")
    assert str(on_jax["backend"]) == "jax"
    on_tensorflow = cross_backend_cases.compute()
    assert set(on_tensorflow) == set(on_jax.files) - {"backend"}
    assert len(on_tensorflow) >= 20
    for key, expected in on_tensorflow.items():
        if "/classes/" in key or "/removed/" in key or key.endswith("class_masks"):
            np.testing.assert_array_equal(on_jax[key], expected, err_msg=key)
        else:
            np.testing.assert_allclose(on_jax[key], expected, rtol=0, atol=1e-5, err_msg=key)


def test_input_gradients_match_numpy_and_refuse_a_select_they_cannot_differentiate():
    from masklab.gradients import input_gradients

    model = cross_backend_cases.mlp()  # 8 -> 10 relu -> 6 relu -> 3 (logits), weights from NumPy
    x = np.random.default_rng(9).normal(size=(5, 8)).astype("float32")
    w1, b1, w2, b2, w3, b3 = model.get_weights()
    h1 = x @ w1 + b1
    h2 = np.maximum(h1, 0) @ w2 + b2
    by_hand = (((h2 > 0) * w3[:, 1]) @ w2.T * (h1 > 0)) @ w1.T  # d logit_1 / dx through both ReLUs
    np.testing.assert_allclose(input_gradients(model, x, lambda out: out[:, 1]), by_hand, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"select cannot be applied to the model's outputs of shape \(3,\)"):
        input_gradients(model, x, lambda out: out[:, 5])
    with pytest.raises(ValueError, match=r"select must return real-valued outputs.*Received: dtype int"):
        input_gradients(model, x, lambda out: keras.ops.argmax(out, axis=-1))

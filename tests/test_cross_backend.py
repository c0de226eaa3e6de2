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

pytestmark = pytest.mark.skipif(keras.config.backend() != "tensorflow",
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

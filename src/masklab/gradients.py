"""Gradients with respect to a model's inputs, on every Keras backend (TensorFlow's tape, ``jax.grad``, torch's
autograd): what saliency maps and input attributions need, written once."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np


def input_gradients(model: keras.Model, x: np.ndarray, select: Callable | None = None) -> np.ndarray:
    """``d sum(select(model(x))) / dx``: for each sample, the gradient of its selected output (e.g.
    ``lambda y: y[:, 1]``, the probability of class 1; default: the sum of every output) with respect to its
    input, in inference mode. Samples do not interact (no batch statistics in inference), so summing over the
    batch gives every sample's own gradient. ``select`` must return real values (not classes) and index only
    existing outputs: both are checked on one sample first. Returns a float32 array shaped like ``x``."""
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a non-empty array of floating inputs. Received: shape {x.shape}, dtype {x.dtype}")
    select = select or (lambda outputs: outputs)
    # select tried on concrete outputs first: JAX would clamp an index out of range without a word, and a
    # TensorFlow tape gives no gradient (None) through an integer result such as argmax
    probe_outputs = np.asarray(keras.ops.convert_to_numpy(model(x[:1], training=False)))
    try:
        probe = np.asarray(keras.ops.convert_to_numpy(select(probe_outputs)))
    except (IndexError, ValueError, TypeError) as error:
        raise ValueError(f"select cannot be applied to the model's outputs of shape {probe_outputs.shape[1:]} per "
                         f"sample: {error}") from error
    if not np.issubdtype(probe.dtype, np.floating):
        raise ValueError(f"select must return real-valued outputs to differentiate (e.g. probabilities[:, k]). "
                         f"Received: dtype {probe.dtype}")

    def total(inputs):
        return keras.ops.sum(select(model(inputs, training=False)))

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = total(tensor)
        return np.asarray(tape.gradient(value, tensor), dtype=np.float32)
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(total)(jax.numpy.asarray(x)), dtype=np.float32)
    if backend == "torch":
        import torch

        tensor = torch.tensor(x, requires_grad=True)
        total(tensor).backward()
        return tensor.grad.detach().cpu().numpy().astype(np.float32)
    raise ValueError(f"input gradients are not implemented for the {backend!r} backend")

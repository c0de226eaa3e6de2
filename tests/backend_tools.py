"""Gradients and compiled calls written once for every Keras backend the suite runs on (TensorFlow, JAX).

Each test runs under the backend of ``KERAS_BACKEND``; these helpers do with the backend's own machinery what a
test would otherwise write with ``tf.GradientTape`` / ``tf.function``: TensorFlow's tape and ``tf.function``, or
JAX's ``grad`` / ``jit`` over the variables' values (read through ``keras.StatelessScope``, as Keras' own JAX
trainer does).
"""

import keras
import numpy as np

BACKEND = keras.config.backend()


def gradients(loss_fn, variables=(), inputs=()):
    """``(d loss / d variables, d loss / d inputs)`` as NumPy arrays, where ``loss_fn(*inputs)`` returns a scalar
    computed by layers that read ``variables`` (Keras variables) and the ``inputs`` (arrays)."""
    variables = list(variables)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = loss_fn(*tensors)
        grads = tape.gradient(loss, [v.value for v in variables] + tensors)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def pure(values, arrays):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn(*arrays)

        by_values, by_inputs = jax.grad(pure, argnums=(0, 1))([v.value for v in variables],
                                                              [jnp.asarray(x) for x in inputs])
        grads = [*by_values, *by_inputs]
    else:
        raise NotImplementedError(f"no gradient helper for the {BACKEND!r} backend")
    grads = [None if g is None else np.asarray(keras.ops.convert_to_numpy(g)) for g in grads]
    return grads[:len(variables)], grads[len(variables):]


def compiled(fn, variables=(), jit_compile=True):
    """``fn`` compiled (XLA with ``jit_compile``): ``tf.function`` on TensorFlow; on JAX ``jax.jit`` of ``fn`` as a
    pure function of ``variables``' values, whose updates (e.g. masks a layer recomputes in its call) are
    written back after each call, as a training step does."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile)
    if BACKEND != "jax":
        raise NotImplementedError(f"no compile helper for the {BACKEND!r} backend")
    import jax

    variables = list(variables)

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            out = fn(*args)
        updated = [scope.get_current_value(v) for v in variables]
        return out, [value if new is None else new for value, new in zip(values, updated)]

    jitted = jax.jit(pure)

    def call(*args):
        out, updated = jitted([v.value for v in variables], *args)
        for variable, value in zip(variables, updated):
            variable.assign(value)
        return out

    return call


def to_numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))

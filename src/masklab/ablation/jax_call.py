"""The JAX backend's compiled ablation call, and the split of the ablations over the devices of a distribution.

:class:`JaxCall` compiles :class:`~masklab.ablation.runner.AblationRunner`'s forward pass with ``jax.jit`` as a
pure function of the model's variable values (read through ``keras.StatelessScope``, as ``Model.stateless_call``
does). When a ``keras.distribution`` is active (``keras.distribution.set_distribution`` or its ``scope()``) and
its mesh has several devices, the K ablations of a call are split over all of them (``jax.shard_map``: each device
runs the model on every input with its share of the masks; the masks are padded with keep-everything rows to a
multiple of the device count, and those rows are dropped again), over every process of a multi-process run too
(each process passes the same arrays; every process gets the whole result back). The inputs, replacements and
weights are replicated: the layers before the first ablated one run once per input on every device.
"""

from __future__ import annotations

import keras
import numpy as np


def ablation_mesh():
    """The JAX mesh of the active ``keras.distribution`` when it spans several devices, else None."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    mesh = distribution.device_mesh.backend_mesh
    return mesh if mesh.devices.size > 1 else None


class JaxCall:
    """``call(inputs, masks, replacements)`` of a runner's ``forward``, compiled; split over devices (above)."""

    def __init__(self, forward, model):
        import jax

        self.forward, self.variables = forward, list(model.variables)
        self.jitted = jax.jit(self._pure)
        self._sharded: dict = {}   # mesh -> compiled shard_map
        self._placed: tuple = (None, None, None)  # (mesh, variable values, their replicated copies)
        self.devices_used = 1  # by the last call

    def _pure(self, values, inputs, masks, replacements):
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))):
            return self.forward(inputs, masks, replacements)

    def __call__(self, inputs, masks, replacements):
        values = [variable.value for variable in self.variables]
        mesh = ablation_mesh() if masks is not None else None
        if mesh is None:
            self.devices_used = 1
            return self.jitted(values, inputs, masks, replacements)
        self.devices_used = int(mesh.devices.size)
        return self._split(mesh, values, inputs, masks, replacements)

    def _split(self, mesh, values, inputs, masks, replacements):
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        axes = tuple(mesh.axis_names)
        every, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(axes))
        k, devices = int(masks[0].shape[0]), int(mesh.devices.size)
        padding = -k % devices
        host_masks = [np.asarray(m) for m in masks]
        if padding:  # rows that keep every unit, dropped from the result below
            host_masks = [np.concatenate([m, np.ones((padding,) + m.shape[1:], m.dtype)]) for m in host_masks]
        if mesh not in self._sharded:
            self._sharded[mesh] = jax.jit(jax.shard_map(self._pure, mesh=mesh, in_specs=(P(), P(), P(axes), P()),
                                                        out_specs=P(axes)))
        result = self._sharded[mesh](self._replicated(mesh, values),
                                     [_place(np.asarray(a), every) for a in inputs],
                                     [_place(m, split) for m in host_masks],
                                     [None if r is None else _place(np.asarray(r), every) for r in replacements])
        return keras.tree.map_structure(lambda out: _gather(out)[:k], result)

    def _replicated(self, mesh, values):
        """The variable values copied to every device of ``mesh``, reused while the model's weights are unchanged."""
        placed_mesh, placed_values, copies = self._placed
        if placed_mesh is not mesh or placed_values is None or \
                any(a is not b for a, b in zip(placed_values, values)):
            from jax.sharding import NamedSharding
            from jax.sharding import PartitionSpec as P

            every = NamedSharding(mesh, P())
            copies = [_place(np.asarray(v), every) for v in values]
            self._placed = (mesh, values, copies)
        return copies


def _place(array: np.ndarray, sharding):
    """A global array laid out by ``sharding`` from a host array every process holds (one process or several)."""
    import jax

    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _gather(array) -> np.ndarray:
    """A global array as a host array in every process."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)

"""Reference models of the seeds, built with the functional API and named layers."""

from __future__ import annotations

from typing import Sequence

import keras

from masklab.layers import CurriculumDropout, NSDropout, SparseDense, TargetedDropout, as_connectivity


def mlp(input_dim: int = 784, hidden_units: int | Sequence[int] = (600,), num_classes: int = 10, *,
        activation: str = "relu", kernel_regularizer=None, name: str = "mlp") -> keras.Model:
    """``input_dim -> hidden_units... -> num_classes`` softmax MLP (seeds 000/001: 784-600-10, ReLU).

    Hidden layers are named ``hidden_1``, ``hidden_2``, ...; the output layer ``output``.
    ``kernel_regularizer`` applies to the hidden layers' kernels.
    """
    hidden_units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
    if input_dim < 1 or num_classes < 2 or not hidden_units or min(hidden_units) < 1:
        raise ValueError(f"Need input_dim >= 1, num_classes >= 2 and positive hidden sizes. Received: "
                         f"input_dim={input_dim}, hidden_units={hidden_units}, num_classes={num_classes}")
    inputs = keras.Input((input_dim,), name="pixels")
    x = inputs
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation=activation, kernel_regularizer=kernel_regularizer,
                               name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def sparse_mlp(connectivity, num_classes: int = 10, *, activation: str = "relu", implementation: str = "auto",
               kernel_regularizer=None, fan_scaling=None, name: str = "sparse_mlp") -> keras.Model:
    """``input_dim -> SparseDense(units, connectivity) -> num_classes`` softmax MLP (seed 003).

    ``connectivity``: anything ``masklab.layers.as_connectivity`` reads; its shape fixes input_dim and units.
    The sparse layer is named ``hidden_1`` (so ablation and surgery address it like the dense MLP's);
    ``fan_scaling``: see ``SparseDense``.
    """
    connectivity = as_connectivity(connectivity)
    hidden = SparseDense(connectivity.units, connectivity, activation=activation, implementation=implementation,
                         kernel_regularizer=kernel_regularizer, fan_scaling=fan_scaling, name="hidden_1")
    inputs = keras.Input((connectivity.input_dim,), name="inputs")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(hidden(inputs))
    return keras.Model(inputs, outputs, name=name)


def sparse_hierarchy_mlp(connectivities: Sequence, num_classes: int = 2, *, activation: str = "tanh",
                         implementation: str = "auto", kernel_regularizer=None, fan_scaling=None,
                         name: str = "sparse_hierarchy") -> keras.Model:
    """A P-NET-style multi-level network: one ``SparseDense`` per connectivity (e.g. the list
    ``masklab.layers.connectivity_hierarchy`` returns: genes -> pathways -> parent pathways -> ...), then a
    ``num_classes`` softmax head on the top level. Layers ``level_1``, ``level_2``, ... and ``output``.

    Consecutive connectivities must chain: level ``k``'s units are level ``k + 1``'s inputs (same count, and the
    same names where both have names)."""
    connectivities = [as_connectivity(c) for c in connectivities]
    if not connectivities:
        raise ValueError("connectivities must hold at least one level. Received: an empty list")
    for k, (below, above) in enumerate(zip(connectivities, connectivities[1:]), start=1):
        if below.units != above.input_dim or (below.unit_names and above.input_names
                                              and below.unit_names != above.input_names):
            raise ValueError(f"connectivities[{k - 1}] has {below.units} units but connectivities[{k}] expects "
                             f"{above.input_dim} inputs (or the names differ): the levels must chain. Received "
                             f"shapes {[c.shape for c in connectivities]}")
    inputs = keras.Input((connectivities[0].input_dim,), name="inputs")
    x = inputs
    for k, connectivity in enumerate(connectivities, start=1):
        x = SparseDense(connectivity.units, connectivity, activation=activation, implementation=implementation,
                        kernel_regularizer=kernel_regularizer, fan_scaling=fan_scaling, name=f"level_{k}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def seed_cnn(input_shape=(28, 28, 1), num_classes: int = 10, *, dropout: str | None = None, rate: float = 0.2,
             mask_classes: int | None = None, refresh: str = "epoch", dropout_options: dict | None = None,
             seed: int | None = None, name: str = "seed_cnn") -> keras.Model:
    """Seed 004's federated-learning CNN: conv 5x5 x32 + maxpool, conv 5x5 x64 + maxpool, flatten, dense 512
    ReLU, dense ``num_classes`` softmax (channels_last, 'same' padding). Layers ``conv_1``, ``pool_1``,
    ``conv_2``, ``pool_2``, ``flatten``, ``dense_512``, ``output``.

    ``dropout`` (default None: the seed's model, no dropout): one of :data:`DROPOUT_KINDS`, a layer named
    ``dropout`` on the ``(7, 7, 64)`` feature maps after ``pool_2``, dropping whole channels (``"dropout"`` is
    ``SpatialDropout2D``; ``"nsdropout"``: one mask per class over the 64 channels, model inputs
    ``[images, mask_class]``). Other arguments as :func:`dropout_mlp`.
    """
    conv = dict(kernel_size=5, padding="same", activation="relu")
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Conv2D(32, name="conv_1", **conv)(inputs)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool_1")(x)
    x = keras.layers.Conv2D(64, name="conv_2", **conv)(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool_2")(x)
    if dropout is not None:
        x, inputs = dropout_layer(x, inputs, dropout, rate=rate, num_classes=num_classes, mask_classes=mask_classes,
                                  refresh=refresh, options=dropout_options, seed=seed)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(512, activation="relu", name="dense_512")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


DROPOUT_KINDS = ("nsdropout", "dropout", "curriculum", "targeted")


def dropout_layer(h, inputs, kind: str, *, rate: float, num_classes: int, mask_classes: int | None = None,
                  refresh: str = "step", rescale_inference: bool = True, options: dict | None = None,
                  seed: int | None = None):
    """Apply a dropout layer named ``dropout`` of ``kind`` to ``h``; returns ``(output, model inputs)``.

    ``"nsdropout"`` adds the float ``mask_class`` input (``mask_classes`` rows in the mask table, default
    ``num_classes``; 1 for a single class-free mask); ``"dropout"`` is ``keras.layers.Dropout`` on vectors and
    ``SpatialDropout{1,2,3}D`` on feature maps; ``"curriculum"`` / ``"targeted"``: :class:`CurriculumDropout`
    (``options={"gamma": ...}``) / :class:`TargetedDropout` (``options={"targeted_fraction": ...}``, where
    ``rate`` is the drop probability of a targeted unit).
    """
    if kind not in DROPOUT_KINDS:
        raise ValueError(f"dropout must be one of {DROPOUT_KINDS}. Received: dropout={kind!r}")
    options = dict(options or {})
    allowed = {"curriculum": {"gamma"}, "targeted": {"targeted_fraction"}}.get(kind, set())
    if set(options) != allowed:
        raise ValueError(f"dropout={kind!r} takes dropout_options with exactly the keys {sorted(allowed)}. "
                         f"Received: {sorted(options)}")
    if kind == "nsdropout":
        # float, not int: an int Input would truncate a class of 1.7 to 1 before the layer could refuse it
        mask_class = keras.Input((), dtype="float32", name="mask_class")
        layer = NSDropout(rate, num_classes if mask_classes is None else mask_classes, refresh=refresh,
                          rescale_inference=rescale_inference, seed=seed, name="dropout")
        return layer([h, mask_class]), [inputs, mask_class]
    if kind == "curriculum":
        return CurriculumDropout(rate, options["gamma"], seed=seed, name="dropout")(h), inputs
    if kind == "targeted":
        return TargetedDropout(rate, options["targeted_fraction"], seed=seed, name="dropout")(h), inputs
    spatial = {3: keras.layers.SpatialDropout1D, 4: keras.layers.SpatialDropout2D, 5: keras.layers.SpatialDropout3D}
    layer_class = spatial.get(len(h.shape), keras.layers.Dropout)
    return layer_class(rate, seed=seed, name="dropout")(h), inputs


def dropout_mlp(input_dim: int = 784, hidden_units: Sequence[int] = (128, 128, 128), num_classes: int = 10, *,
                dropout: str = "nsdropout", rate: float = 0.2, first_layer_l2: float = 0.0, refresh: str = "step",
                rescale_inference: bool = True, mask_classes: int | None = None, dropout_options: dict | None = None,
                seed: int | None = None, name: str | None = None) -> keras.Model:
    """Seed 002's network: ``input_dim -> hidden_units (ReLU) -> num_classes`` softmax, one dropout layer after
    the first hidden layer's activation, L2 ``first_layer_l2`` on the first layer's kernel AND bias.

    ``dropout="nsdropout"``: an :class:`~masklab.layers.NSDropout` layer named ``dropout``; the model's inputs are
    ``[pixels, mask_class]`` (train with ``fit([x, y], y)``; predict with ``NSDropoutPredictor``).
    ``dropout="dropout"``: standard ``keras.layers.Dropout`` named ``dropout``; one input, ``pixels``.
    ``"curriculum"`` / ``"targeted"`` (one input) and ``mask_classes`` / ``dropout_options``: see
    :func:`dropout_layer`.
    Layers: ``hidden_1`` ... ``hidden_n``, ``dropout``, ``output``.
    """
    hidden_units = tuple(hidden_units)
    if dropout not in DROPOUT_KINDS:
        raise ValueError(f"dropout must be one of {DROPOUT_KINDS}. Received: dropout={dropout!r}")
    if not hidden_units or min(hidden_units) < 1 or input_dim < 1 or num_classes < 2:
        raise ValueError(f"Need input_dim >= 1, num_classes >= 2 and positive hidden sizes. Received: "
                         f"input_dim={input_dim}, hidden_units={hidden_units}, num_classes={num_classes}")
    regularizer = keras.regularizers.L2(first_layer_l2) if first_layer_l2 else None
    pixels = keras.Input((input_dim,), name="pixels")
    h = keras.layers.Dense(hidden_units[0], activation="relu", kernel_regularizer=regularizer,
                           bias_regularizer=regularizer, name="hidden_1")(pixels)
    h, inputs = dropout_layer(h, pixels, dropout, rate=rate, num_classes=num_classes, mask_classes=mask_classes,
                              refresh=refresh, rescale_inference=rescale_inference, options=dropout_options, seed=seed)
    for i, units in enumerate(hidden_units[1:], start=2):
        h = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(h)
    return keras.Model(inputs, outputs, name=name or f"{dropout}_mlp")


def residual_cnn(input_shape=(28, 28, 1), num_classes: int = 10, *, widths: Sequence[int] = (16, 32, 64),
                 name: str = "residual_cnn") -> keras.Model:
    """A small ResNet (basic blocks) for pruning experiments: a 3x3 stem, then one residual block per stage
    (``conv3x3 -> BN -> ReLU -> conv3x3 -> BN``, added to the shortcut, then ReLU), stride 2 and a 1x1
    projection shortcut (+ BN) from the second stage on; global average pooling; softmax.

    Layers: ``stem_conv``/``stem_bn``/``stem_relu``; ``stage{s}_conv{1,2}``, ``stage{s}_bn{1,2}``,
    ``stage{s}_shortcut`` / ``stage{s}_shortcut_bn`` (s >= 2), ``stage{s}_add``, ``stage{s}_out``; ``pool``;
    ``output``. Each stage's residual stream is one dependency group for :mod:`masklab.surgery`.
    """
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1 or num_classes < 2:
        raise ValueError(f"Need positive widths and num_classes >= 2. Received: widths={widths}, "
                         f"num_classes={num_classes}")
    conv = dict(kernel_size=3, padding="same", use_bias=False)
    bn = dict(momentum=0.9)  # moving statistics that settle within the few hundred steps of a small dataset
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Conv2D(widths[0], name="stem_conv", **conv)(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn", **bn)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, width in enumerate(widths, start=1):
        stride = 1 if stage == 1 else 2
        h = keras.layers.Conv2D(width, strides=stride, name=f"stage{stage}_conv1", **conv)(x)
        h = keras.layers.BatchNormalization(name=f"stage{stage}_bn1", **bn)(h)
        h = keras.layers.ReLU(name=f"stage{stage}_relu1")(h)
        h = keras.layers.Conv2D(width, name=f"stage{stage}_conv2", **conv)(h)
        h = keras.layers.BatchNormalization(name=f"stage{stage}_bn2", **bn)(h)
        shortcut = x
        if stage > 1:
            shortcut = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False,
                                           name=f"stage{stage}_shortcut")(x)
            shortcut = keras.layers.BatchNormalization(name=f"stage{stage}_shortcut_bn", **bn)(shortcut)
        x = keras.layers.Add(name=f"stage{stage}_add")([shortcut, h])
        x = keras.layers.ReLU(name=f"stage{stage}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)

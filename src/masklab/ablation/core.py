"""Batched ablation: K masks over one or several layers, applied inside one compiled function per chunk.

Masks are KEEP masks (1 keeps a unit, 0 ablates it; a value in between keeps that share of the unit and replaces
the rest). An ablated unit is replaced by 0 (``"zero"``), by its mean over reference inputs (``"mean"``, every
spatial / time position its own mean), by its value on a reference input drawn at random (``"resample"``), or by
given values. The unit is the channel: the last axis of ``(batch, units)``, ``(batch, T, units)`` and
``(batch, H, W, C)`` outputs, axis 1 of a ``channels_first`` layer's output; an ablation covers every position.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np

from masklab.ablation.runner import REPLACEMENTS, AblationRunner, Target, check_targets, input_arrays, tensor_sizes
from masklab.layers.neuron_mask import NeuronMask, validate_mask

REDUCTIONS = ("accuracy", "per_class_accuracy", "agreement")
# elements of the largest tensor handled per compiled call: ~64 MB of float32
_CHUNK_ELEMENTS = 1 << 24


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def runner_for(model, targets: list[Target], modes: list[str], argmax: bool = False,
               jit_compile: bool = False) -> AblationRunner:
    """One :class:`AblationRunner` per model, targets and modes, kept while the model lives: repeated calls reuse
    its compiled functions instead of tracing the graph again."""
    runners = _RUNNERS.setdefault(model, {})
    key = (tuple(id(t.layer) for t in targets), tuple(modes), argmax, jit_compile)
    if key not in runners:
        runners[key] = AblationRunner(model, targets, modes, argmax=argmax, jit_compile=jit_compile)
    return runners[key]


# --- checks -----------------------------------------------------------------------------------------------------
def check_inputs(x, what: str = "x") -> np.ndarray:
    """Model inputs as an array with at least one sample and no NaN / infinite values; ValueError otherwise."""
    if x is None or isinstance(x, (str, bytes, dict)) or not hasattr(x, "__len__"):
        raise ValueError(f"{what} must be an array of model inputs. Received: {what} of type {type(x).__name__}")
    array = np.asarray(x)
    if array.ndim == 0 or len(array) == 0:
        raise ValueError(f"{what} must hold at least one sample. Received: shape {array.shape}")
    if np.issubdtype(array.dtype, np.number) and not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values ({int((~np.isfinite(array)).sum())} of "
                         f"{array.size})")
    return array


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    return int(seed)


def check_positive(value, what: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer{' or None' if allow_none else ''}. Received: "
                         f"{what}={value!r}")
    return int(value)


def check_labels(y, n: int, classes: int | None = None, what: str = "y") -> np.ndarray:
    """Integer class labels ``(n,)`` in ``[0, classes)``; ValueError naming what was received otherwise."""
    if y is None or isinstance(y, (str, bytes)):
        raise ValueError(f"{what} must be an array of integer class labels. Received: {what}={y!r}")
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"{what} must be a flat array of class indices (not one-hot). Received: shape "
                         f"{labels.shape}")
    if len(labels) != n:
        raise ValueError(f"{what} must hold one label per input ({n}). Received: {len(labels)} labels")
    if not np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        if not (np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all()
                and np.all(labels == np.round(labels))):
            raise ValueError(f"{what} must hold integer class indices. Received: dtype {labels.dtype}, first values "
                             f"{labels[:5].tolist()}")
    labels = labels.astype(np.int64)
    bad = labels[(labels < 0) | (labels >= (classes if classes is not None else np.iinfo(np.int64).max))]
    if bad.size:
        raise ValueError(f"{what} labels must lie in [0, {classes}). Received out of range: "
                         f"{np.unique(bad)[:10].tolist()}")
    return labels


def get_layer(model: keras.Model, layer) -> keras.layers.Layer:
    """The layer object for a name, a nested path (``"backbone/conv"``) or a layer of ``model``."""
    return Target.find(model, layer)


def targets_of(model, layers) -> list[Target]:
    """``Target`` per layer: one layer (name, path or object) or a list of them."""
    if isinstance(layers, (list, tuple)):
        if not layers:
            raise ValueError("layers must name at least one layer. Received: layers=[]")
        targets = [Target(model, layer) for layer in layers]
    else:
        targets = [Target(model, layers)]
    check_targets(model, targets)
    return targets


def check_masks(masks, target: Target, what: str) -> np.ndarray:
    """``(K, units)`` float32 KEEP masks for ``target`` (a single ``(units,)`` mask counts as K = 1)."""
    if masks is None or isinstance(masks, (str, bytes)):
        raise ValueError(f"{what} must be a (K, {target.units}) array of KEEP masks for layer {target.name!r}. "
                         f"Received: {what}={masks!r}")
    masks = validate_mask(masks, target.units, what=what).reshape(-1, target.units)
    if len(masks) == 0:
        raise ValueError(f"{what} must hold at least one mask. Received: shape {masks.shape}")
    return masks


# --- replacement values -----------------------------------------------------------------------------------------
def activations(model: keras.Model, layers, x, batch_size: int = 256):
    """Outputs of ``layers`` (after their activation) on ``x``: an array ``(N, *layer output shape)`` for one
    layer, ``{layer name: array}`` for a list."""
    targets = targets_of(model, layers)
    arrays = input_arrays(model, x)
    runner = runner_for(model, targets, ["zero"] * len(targets))
    chunks: list[list[np.ndarray]] = [[] for _ in targets]
    for start in range(0, len(arrays[0]), check_positive(batch_size, "batch_size")):
        captured, _ = runner.capture([a[start:start + batch_size] for a in arrays])
        for i, value in enumerate(captured):
            chunks[i].append(keras.ops.convert_to_numpy(value))
    result = {t.name: np.concatenate(c) for t, c in zip(targets, chunks)}
    return result if isinstance(layers, (list, tuple)) else result[targets[0].name]


def _replacement_specs(model, targets, replacement, reference_x, seed, n: int):
    """Per target ``(mode, value)`` for the runner, and the reference inputs to resample from (or None)."""
    specs = replacement if isinstance(replacement, dict) else {t.name: replacement for t in targets}
    if isinstance(replacement, dict):
        by_name = {}
        for key, value in replacement.items():
            by_name[Target.find(model, key).name] = value
        missing = [t.name for t in targets if t.name not in by_name]
        extra = [name for name in by_name if name not in {t.name for t in targets}]
        if extra:
            raise ValueError(f"replacement names layers that are not ablated: {extra}. Received keys: "
                             f"{list(replacement)}")
        if missing:
            raise ValueError(f"replacement is a dict without the layers {missing}. Received keys: "
                             f"{list(replacement)}")
        specs = by_name
    modes, values = [], []
    needs_reference = any(isinstance(specs[t.name], str) and specs[t.name] in ("mean", "resample")
                          for t in targets)
    reference = None
    if needs_reference:
        if reference_x is None:
            raise ValueError("replacement 'mean' / 'resample' takes values from reference inputs: pass reference_x "
                             "(training data, never the split you evaluate on). Received: reference_x=None")
        reference = input_arrays(model, reference_x, "reference_x")
    means = None
    for target in targets:
        spec = specs[target.name]
        if isinstance(spec, str):
            if spec not in REPLACEMENTS:
                raise ValueError(f"replacement must be one of {REPLACEMENTS} or an array of {target.units} values. "
                                 f"Received: replacement={spec!r}")
            if spec == "zero":
                modes.append("zero"), values.append(None)
            elif spec == "mean":
                if means is None:
                    means = _reference_means(model, targets, reference)
                modes.append("constant"), values.append(means[target.name])
            else:
                modes.append("per_sample"), values.append(None)
            continue
        if spec is None:
            raise ValueError(f"replacement must be one of {REPLACEMENTS} or an array of {target.units} values. "
                             f"Received: replacement=None")
        array = np.asarray(spec, dtype=np.float32)
        if array.shape != (target.units,) or not np.isfinite(array).all():
            raise ValueError(f"replacement for layer {target.name!r} must be {target.units} finite values (one per "
                             f"unit). Received: shape {array.shape}")
        shape = [1] * len(target.shape)
        shape[target.axis - 1] = target.units
        modes.append("constant"), values.append(array.reshape(shape))
    resample = None
    if "per_sample" in modes:
        resample = np.random.default_rng(check_seed(seed)).integers(0, len(reference[0]), size=n)
    return modes, values, reference, resample


def _reference_means(model, targets, reference) -> dict[str, np.ndarray]:
    """Mean of each target's output over the reference inputs: the batch axis averaged, positions kept."""
    runner = runner_for(model, targets, ["zero"] * len(targets))
    sums: list = [0.0] * len(targets)
    for start in range(0, len(reference[0]), 256):
        captured, _ = runner.capture([a[start:start + 256] for a in reference])
        for i, value in enumerate(captured):
            sums[i] = sums[i] + np.asarray(keras.ops.convert_to_numpy(value), np.float64).sum(axis=0)
    return {t.name: (s / len(reference[0])).astype(np.float32) for t, s in zip(targets, sums)}


# --- the public entry point -------------------------------------------------------------------------------------
def _plan(model, targets: list[Target], k: int, n: int, batch_size) -> tuple[int, int]:
    """``(masks per call, inputs per call)``. All K masks in one call where memory allows, so the layers before
    the first target run once per input: with ``before`` / ``after`` the largest per-sample tensors computed per
    input / per (mask, input) pair, ``k * n * after + n * before`` stays within about 16 M values.
    ``batch_size`` instead caps the (mask, input) rows per call."""
    rows = check_positive(batch_size, "batch_size", allow_none=True)
    if rows is not None:
        k_chunk = min(k, max(1, rows // min(n, 64)))
        return k_chunk, min(n, max(1, rows // k_chunk))
    before, after = tensor_sizes(model, targets)
    n_chunk = _CHUNK_ELEMENTS // (k * after + before)
    if n_chunk >= 1:
        return k, min(n, n_chunk)
    return max(1, (_CHUNK_ELEMENTS - before) // after), 1


def stream(model, targets: list[Target], masks: list[np.ndarray], x, *, replacement="zero", reference_x=None,
           seed: int = 0, argmax: bool = False, batch_size=None, with_reference: bool = False,
           jit_compile: bool = False):
    """Yields ``(mask slice, input slice, result, unablated predictions or None)`` chunk by chunk: ``result`` is
    the outputs ``[(k, n, ...)]`` or, with ``argmax``, the predicted classes ``(k, n)``."""
    arrays = input_arrays(model, x)
    n, k = len(arrays[0]), len(masks[0])
    modes, values, reference, resample = _replacement_specs(model, targets, replacement, reference_x, seed, n)
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be True or False. Received: jit_compile={jit_compile!r}")
    runner = runner_for(model, targets, modes, argmax=argmax, jit_compile=jit_compile)
    capture = runner_for(model, targets, ["zero"] * len(targets)) if (resample is not None or with_reference) \
        else None
    k_chunk, n_chunk = _plan(model, targets, k, n, batch_size)
    for n_start in range(0, n, n_chunk):
        inputs = [a[n_start:n_start + n_chunk] for a in arrays]
        chunk_values = list(values)
        if resample is not None:
            drawn = resample[n_start:n_start + n_chunk]
            captured, _ = capture.capture([a[drawn] for a in reference])
            chunk_values = [captured[i] if mode == "per_sample" else value
                            for i, (mode, value) in enumerate(zip(modes, values))]
        clean = None
        if with_reference:
            _, outputs = capture.capture(inputs)
            clean = np.asarray(keras.ops.convert_to_numpy(outputs[0])).argmax(axis=-1)
        for k_start in range(0, k, k_chunk):
            chunk_masks = [m[k_start:k_start + k_chunk] for m in masks]
            result = runner.run(inputs, chunk_masks, chunk_values)
            result = keras.ops.convert_to_numpy(result) if argmax else \
                [keras.ops.convert_to_numpy(r) for r in result]
            yield slice(k_start, k_start + k_chunk), slice(n_start, n_start + n_chunk), result, clean


def predict_with_masks(model: keras.Model, layers, x, masks=None, replacement="zero", reference_x=None,
                       seed: int = 0, reduce: str | None = None, y=None, batch_size: int | None = None,
                       jit_compile: bool = False):
    """The model's outputs under K ablations, all computed in one compiled function per chunk.

    Args:
        layers: one layer (name, nested path ``"backbone/conv"`` or object) with ``masks`` of shape
            ``(K, units)``, or a dict ``{layer: (K, units) masks}`` to ablate several layers at once (row k of
            every entry belongs to ablation k; ``masks`` stays None). Any output rank; the mask acts on the
            channel axis at every position. The layer must be called once in the model.
        x: inputs (an array, or a list / dict of arrays for a multi-input model).
        masks: KEEP masks (1 keeps a unit, 0 ablates it), values in [0, 1].
        replacement: ``"zero"``; ``"mean"`` (the unit's mean over ``reference_x``, per position);
            ``"resample"`` (its value on a reference input drawn from ``reference_x`` with ``seed``, one draw per
            input, the same for every ablation); an array of ``units`` values; or a dict of these per layer.
        reduce: ``None`` returns the outputs ``(K, N, outputs)`` (a list for a multi-output model);
            ``"accuracy"`` ``(K,)`` and ``"per_class_accuracy"`` ``(K, classes)`` (NaN for a class absent from
            ``y``) need integer labels ``y``; ``"agreement"`` ``(K,)`` is the share of predictions equal to the
            unablated model's. Reductions stream: no ``(K, N, outputs)`` array is built.
        batch_size: rows (mask x input pairs) per compiled call; default: about 16 M values of the largest tensor.
        jit_compile: compile with XLA (TensorFlow backend). On CPU it speeds up dense tails (1.15x on the
            784-600-10 MLP, ``benchmarks/bench_masks.py``) and slows convolutional ones: off by default.
    """
    targets, mask_list = _targets_and_masks(model, layers, masks)
    arrays = input_arrays(model, x)
    n, k = len(arrays[0]), len(mask_list[0])
    if reduce is not None and reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be None or one of {REDUCTIONS}. Received: reduce={reduce!r}")
    if reduce is None:
        outputs = None
        for ks, ns, result, _ in stream(model, targets, mask_list, arrays, replacement=replacement,
                                        reference_x=reference_x, seed=seed, batch_size=batch_size,
                                        jit_compile=jit_compile):
            if outputs is None:
                outputs = [np.empty((k, n) + r.shape[2:], r.dtype) for r in result]
            for full, part in zip(outputs, result):
                full[ks, ns] = part
        return outputs[0] if len(outputs) == 1 else outputs
    classes = _classes(model)
    labels = None
    if reduce != "agreement":
        if y is None:
            raise ValueError(f"reduce={reduce!r} needs the labels: pass y. Received: y=None")
        labels = check_labels(y, n, classes)
    counts = np.zeros((k, classes) if reduce == "per_class_accuracy" else k, np.int64)
    for ks, ns, predicted, clean in stream(model, targets, mask_list, arrays, replacement=replacement,
                                           reference_x=reference_x, seed=seed, argmax=True, batch_size=batch_size,
                                           with_reference=reduce == "agreement", jit_compile=jit_compile):
        if reduce == "agreement":
            counts[ks] += (predicted == clean[None, :]).sum(axis=1)
        elif reduce == "accuracy":
            counts[ks] += (predicted == labels[None, ns]).sum(axis=1)
        else:
            correct = (predicted == labels[None, ns]).astype(np.int64)
            counts[ks] += correct @ np.eye(classes, dtype=np.int64)[labels[ns]]
    if reduce == "per_class_accuracy":
        support = np.bincount(labels, minlength=classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, counts / np.maximum(support, 1), np.nan)
    return counts / n


def _targets_and_masks(model, layers, masks):
    if isinstance(layers, dict):
        if masks is not None:
            raise ValueError("with layers as a dict {layer: masks} the masks are its values: leave masks=None. "
                             f"Received: masks of type {type(masks).__name__}")
        if not layers:
            raise ValueError("layers must name at least one layer. Received: layers={}")
        targets = [Target(model, layer) for layer in layers]
        check_targets(model, targets)
        mask_list = [check_masks(m, t, f"layers[{t.name!r}]") for t, m in zip(targets, layers.values())]
        sizes = {len(m) for m in mask_list}
        if len(sizes) != 1:
            raise ValueError(f"every layer needs the same number of masks K (row k of each belongs to ablation k). "
                             f"Received: {dict((t.name, len(m)) for t, m in zip(targets, mask_list))}")
        return targets, mask_list
    if isinstance(layers, (list, tuple)):
        raise ValueError("to ablate several layers at once pass a dict {layer: (K, units) masks}. Received: "
                         f"layers={layers!r}")
    targets = targets_of(model, layers)
    return targets, [check_masks(masks, targets[0], "masks")]


def _classes(model) -> int:
    if len(model.outputs) != 1:
        raise ValueError(f"reduce needs a single-output classifier. Received: a model with {len(model.outputs)} "
                         f"outputs (use reduce=None)")
    classes = model.outputs[0].shape[-1]
    if classes is None or classes < 2:
        raise ValueError(f"reduce takes the argmax of the model's output as the predicted class, so the output must "
                         f"have one value per class (>= 2). Received: output shape {tuple(model.outputs[0].shape)}")
    return int(classes)


# --- legacy helpers ---------------------------------------------------------------------------------------------
def split_model(model: keras.Model, layer) -> tuple[keras.Model, keras.Model, int]:
    """``(head, tail, units)`` for a top-level layer with a ``(batch, units)`` output: ``head`` maps the model
    inputs to its output, ``tail`` that output to the model outputs (shared weights). Everything downstream must
    depend on the inputs only through it (:func:`predict_with_masks` has no such limits)."""
    layer = get_layer(model, layer)
    shape = layer.output.shape
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"Layer {layer.name!r} must output (batch, units) to be split at. "
                         f"Received: output shape {tuple(shape)}")
    head = keras.Model(model.inputs, layer.output, name=f"{model.name}_head")
    try:
        tail = keras.Model(layer.output, model.outputs, name=f"{model.name}_tail")
    except ValueError as exc:
        raise ValueError(f"The outputs of {model.name!r} depend on its inputs through other paths than layer "
                         f"{layer.name!r}, so the model cannot be split there: {exc}") from exc
    return head, tail, int(shape[-1])


def hidden_activations(model: keras.Model, layer, x, batch_size: int = 4096) -> np.ndarray:
    """``(N, *output shape)`` output of one ``layer`` (after its activation) for inputs ``x``."""
    if isinstance(layer, (list, tuple, dict)):
        raise ValueError(f"hidden_activations takes one layer (see activations for several). Received: {layer!r}")
    return activations(model, layer, x, batch_size=batch_size)


def with_mask_input(model: keras.Model, layer) -> keras.Model:
    """A functional model ``[inputs, masks] -> outputs`` with a :class:`NeuronMask` after ``layer`` (a top-level
    layer with a ``(batch, units)`` output) that takes one KEEP mask per input; weights shared with ``model``.

    In ``predict`` / ``fit`` every input needs one row per sample: to share one mask, pass
    ``np.broadcast_to(mask, (len(x), units))`` (Keras refuses inputs of different lengths)."""
    head, tail, units = split_model(model, layer)
    if len(model.inputs) != 1:
        raise ValueError(f"with_mask_input needs a single-input model. Received: {len(model.inputs)} inputs")
    inputs = keras.Input(model.inputs[0].shape[1:], name="inputs")
    masks = keras.Input((units,), name="masks")
    masked = NeuronMask(name=f"{get_layer(model, layer).name}_mask")([head(inputs), masks])
    return keras.Model([inputs, masks], tail(masked), name=f"{model.name}_masked")

"""NSDropout (seed 002): class-conditional dropout whose masks come from train vs mask-split statistics.

For each class ``c`` the layer keeps a KEEP mask (1 keeps a unit, 0 drops it) over its ``units`` inputs. A mask
refresh computes, per class, ``d_c = mean(train activations of class c) - mean(mask-split activations of class
c)`` and drops the ``round(units * rate)`` units with the largest ``d_c``. In training every sample gets the
mask of its own class, scaled by ``1 / (1 - rate)``. Before the first refresh the layer behaves like standard
dropout (a fresh Bernoulli(1 - rate) mask per sample), as the original did.

**How the labels reach the layer.** The layer takes two inputs, ``NSDropout(...)([h, mask_class])``:
``h`` is ``(batch, units)`` and ``mask_class`` is ``(batch,)`` integer classes, the class whose mask each sample gets
(``-1``: no class mask, the identity). Give the model's class input a float dtype (``keras.Input(())``): an int
input would truncate a class of 1.7 to 1 before the layer sees it; inside compiled calls a class outside
``[-1, num_classes)``, not an integer or NaN makes that sample's output NaN (eager calls raise). A model using it therefore has the inputs ``[x, mask_class]`` and is
trained with ``model.fit([x, y], y)``: the true label routes the training mask. At inference the label is NOT
available, so inference goes through :class:`NSDropoutPredictor`, which fills ``mask_class`` itself:

* ``"none"``: no mask at all (identity), one pass;
* ``"predicted"``: pass 1 without a mask, pass 2 with the mask of the class predicted by pass 1;
* ``"all"``: one pass per class mask; the decision uses these outputs alone (rule below);
* ``"oracle"``: the mask of the TRUE label. This is the original implementation's inference and leaks the
  label into the hidden layer: it exists only to reproduce the original numbers, and is the only mode that
  accepts labels.

Rule of ``"all"`` (``all_rule="consistent"``, the default): with ``p_k`` the output distribution under the mask
of class ``k``, predict ``argmax_k p_k[k]``: the class whose own mask makes the model most confident in that
same class. ``all_rule="average"`` instead predicts ``argmax_c mean_k p_k[c]`` (an ensemble over masks).

**Refresh schedule** (``refresh=``):

* ``"epoch"`` (mini-batch training): :class:`NSDropoutRefresh`, a callback, recomputes the masks at the end of
  every epoch, from the class means of the activations the epoch's training steps saw (summed in the graph
  as they pass) against the mask split's activations under the current weights;
* ``"step"`` (full-batch training, the original's schedule): every training step recomputes the masks in the
  graph from that step's batch (the whole training set) against the mask-split class means that the callback
  stores at the end of every epoch (one epoch = one step);
* ``"never"``: masks only change through :meth:`NSDropout.set_class_masks` (e.g. random class masks, a control).

**A class absent at refresh time** (no sample of it in the batch or data given): its mask keeps its previous
value (all ones, i.e. keep every unit, if it was never refreshed). Absent from the *mask split* handed to the
callback or to :meth:`NSDropout.refresh`, it is an error: every class needs a mask.

The mask refresh is vectorized and in-graph: one segment sum gives all class means, ``top_k`` gives all class
masks; there is no loop over samples or classes, and it runs on whatever device the backend uses.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

REFRESH_SCHEDULES = ("epoch", "step", "never")
INFERENCE_MODES = ("none", "predicted", "all", "oracle")
ALL_RULES = ("consistent", "average")


# ------------------------------------------------------------------------------------------- mask computation


def class_sums(activations, labels, num_classes: int):
    """Per-class sums of activations ``(num_classes, units)`` and counts ``(num_classes,)`` by one segment sum.

    Labels outside ``[0, num_classes)`` (e.g. ``-1``) belong to no class: they go to an extra segment that is
    dropped, so no backend's treatment of out-of-range segment ids matters.
    """
    activations = ops.convert_to_tensor(activations)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    segments = ops.where(ops.logical_and(labels >= 0, labels < num_classes), labels, num_classes)
    sums = ops.segment_sum(activations, segments, num_segments=num_classes + 1)[:num_classes]
    counts = ops.segment_sum(ops.ones_like(segments, dtype=activations.dtype), segments,
                             num_segments=num_classes + 1)[:num_classes]
    return sums, counts


def class_means(activations, labels, num_classes: int):
    """Per-class mean activations ``(num_classes, units)`` and counts ``(num_classes,)``; a class with no
    sample has mean 0 (and count 0). Labels outside ``[0, num_classes)`` belong to no class."""
    sums, counts = class_sums(activations, labels, num_classes)
    return sums / ops.maximum(counts, 1.0)[:, None], counts


def masks_from_differences(differences, n_drop: int):
    """``(classes, units)`` KEEP masks: 0 at the ``n_drop`` largest differences of each row, 1 elsewhere.

    Ties go to the lower unit index (``top_k``'s order).
    """
    differences = ops.convert_to_tensor(differences)
    units = differences.shape[-1]
    if n_drop == 0:
        return ops.ones_like(differences)
    _, dropped = ops.top_k(differences, k=n_drop, sorted=False)
    return 1.0 - ops.sum(ops.one_hot(dropped, units, dtype=differences.dtype), axis=1)


def refreshed_class_masks(train_means, train_counts, mask_means, mask_counts, previous_masks, n_drop: int):
    """New class masks from the two sides' class means; a class missing on either side keeps ``previous_masks``."""
    new_masks = masks_from_differences(ops.stop_gradient(train_means - mask_means), n_drop)
    present = ops.logical_and(train_counts > 0, mask_counts > 0)
    return ops.where(present[:, None], ops.cast(new_masks, previous_masks.dtype), previous_masks)


def _check_labels(labels, num_classes: int, what: str, n_rows: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{what} must be a (N,) vector of class indices. Received: shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{what} must hold integer class indices. Received dtype {labels.dtype} with "
                             f"non-integer values, e.g. {labels[labels != np.round(labels)][:5].tolist()}")
    labels = labels.astype(np.int64)
    if n_rows is not None and len(labels) != n_rows:
        raise ValueError(f"{what} has {len(labels)} labels for {n_rows} rows of activations/inputs.")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(f"{what} must lie in [0, {num_classes}). "
                         f"Received out of range: {np.unique(bad)[:10].tolist()}")
    return labels


def _check_activations(activations, units: int, what: str) -> np.ndarray:
    activations = np.asarray(activations, dtype=np.float32)
    if activations.ndim < 2 or activations.shape[-1] != units:
        raise ValueError(f"{what} must have shape (N, {units}) or (N, ..., {units}) (feature maps, channels "
                         f"last). Received: shape {activations.shape}")
    if activations.ndim > 2:  # a channel's statistic is its mean over every position
        activations = activations.mean(axis=tuple(range(1, activations.ndim - 1)))
    if not np.all(np.isfinite(activations)):
        raise ValueError(f"{what} contains NaN or inf at rows {np.flatnonzero(~np.isfinite(activations).all(1))[:5]}")
    return activations


# ---------------------------------------------------------------------------------------------------- layer


@keras.saving.register_keras_serializable(package="masklab")
class NSDropout(keras.layers.Layer):
    """Class-conditional dropout: each sample's units are dropped by the mask of its class (see module doc).

    Call it as ``NSDropout(rate, num_classes)([h, mask_class])`` with ``h`` ``(batch, units)`` and
    ``mask_class`` ``(batch,)`` integer classes (``-1``: no mask). Output: ``h * mask[mask_class] / (1 - rate)``
    in training; at inference ``h * mask[mask_class] * inference_scale`` (``h`` itself where ``mask_class`` is
    -1 or no refresh happened yet).

    Args:
        rate: fraction of units each class mask drops, in (0, 1); ``round(units * rate)`` units per class.
        num_classes: number of classes (rows of the mask table). It need not be the model's number of outputs:
            with a label-free router (:mod:`masklab.layers.nsdropout_routing`) a "class" is whatever the router
            assigns, e.g. a k-means cluster, or 1 for a single class-free mask.
        refresh: ``"epoch"``, ``"step"`` or ``"never"`` (see module doc).
        rescale_inference: if True (default) a class mask at inference is scaled by ``1 / (1 - rate)`` as in
            training; False reproduces the original implementation, which did not rescale at inference.
        seed: seed of the Bernoulli masks used before the first refresh.

    State (non-trainable, saved with the weights): ``class_masks`` ``(num_classes, units)``, ``refreshed``
    (0 before the first refresh, then 1), ``mask_split_means`` / ``mask_split_counts`` (``"step"`` schedule),
    ``epoch_sums`` / ``epoch_counts`` (``"epoch"`` schedule: the current epoch's training activations).
    """

    # Inside compiled calls (fit, predict, jit) the classes cannot be checked in Python: a sample routed to a class
    # outside [-1, num_classes), to a non-integer or NaN class gets NaN outputs instead of some class's mask.
    # Class-level switch for the benchmark that measures what the check costs (read when a call is traced);
    # always on otherwise.
    check_values = True

    def __init__(self, rate: float, num_classes: int, refresh: str = "epoch", rescale_inference: bool = True,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) \
                or not 0 < float(rate) < 1:
            raise ValueError(f"rate must be a number in (0, 1). Received: rate={rate!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1 (rows of the mask table; 1: one class-free "
                             f"mask). Received: num_classes={num_classes!r}")
        if refresh not in REFRESH_SCHEDULES:
            raise ValueError(f"refresh must be one of {REFRESH_SCHEDULES}. Received: refresh={refresh!r}")
        self.rate = float(rate)
        self.num_classes = int(num_classes)
        self.refresh_schedule = refresh
        self.rescale_inference = bool(rescale_inference)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.units = None
        self.n_drop = None

    @property
    def inference_scale(self) -> float:
        return 1.0 / (1.0 - self.rate) if self.rescale_inference else 1.0

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError(f"NSDropout takes two inputs, [activations (batch, units), mask_class (batch,)]. "
                             f"Received: input_shape={input_shape}")
        x_shape, class_shape = input_shape
        if len(x_shape) < 2 or x_shape[-1] is None:
            raise ValueError(f"NSDropout's activations must have shape (batch, units), or (batch, ..., channels) "
                             f"for feature maps (channels last), with known units. Received: {tuple(x_shape)}")
        if len(class_shape) not in (1, 2) or (len(class_shape) == 2 and class_shape[-1] != 1):
            raise ValueError(f"mask_class must have shape (batch,) (or (batch, 1)). Received: {tuple(class_shape)}")
        self.units = int(x_shape[-1])
        self.n_drop = int(round(self.units * self.rate))
        if self.n_drop >= self.units:
            raise ValueError(f"rate={self.rate} drops round({self.units} * {self.rate}) = {self.n_drop} of "
                             f"{self.units} units: every unit. Use a smaller rate or more units.")
        if self.n_drop == 0:
            raise ValueError(f"rate={self.rate} drops round({self.units} * {self.rate}) = 0 of {self.units} units: "
                             f"the class masks would keep every unit. Use a larger rate or more units.")
        table = (self.num_classes, self.units)
        self.class_masks = self.add_weight(name="class_masks", shape=table, initializer="ones", trainable=False)
        self.refreshed = self.add_weight(name="refreshed", shape=(), initializer="zeros", trainable=False)
        self.mask_split_means = self.add_weight(name="mask_split_means", shape=table, initializer="zeros",
                                                trainable=False)
        self.mask_split_counts = self.add_weight(name="mask_split_counts", shape=(self.num_classes,),
                                                 initializer="zeros", trainable=False)
        # "epoch" schedule: class sums of the activations seen by this epoch's training steps
        self.epoch_sums = self.add_weight(name="epoch_sums", shape=table, initializer="zeros", trainable=False)
        self.epoch_counts = self.add_weight(name="epoch_counts", shape=(self.num_classes,), initializer="zeros",
                                            trainable=False)

    def call(self, inputs, training=None):
        x, mask_class = inputs
        self._check_eager_classes(mask_class, x)
        poison = None
        if self.check_values:  # inside compiled calls: invalid routes make their samples NaN, never a wrong mask
            raw = ops.cast(ops.reshape(mask_class, (-1,)), x.dtype)
            invalid = ops.logical_or(ops.logical_or(raw < -1, raw >= self.num_classes),
                                     ops.logical_or(ops.isnan(raw), raw != ops.floor(raw)))
            poison = ops.reshape(ops.where(invalid, ops.cast(float("nan"), x.dtype), ops.cast(0.0, x.dtype)),
                                 (-1,) + (1,) * (len(x.shape) - 1))
            mask_class = ops.where(invalid, -1, ops.cast(ops.where(invalid, 0, raw), "int32"))
        else:
            mask_class = ops.reshape(ops.cast(mask_class, "int32"), (-1,))
        out = self._masked(x, mask_class, training)
        return out if poison is None else out + poison

    def _masked(self, x, mask_class, training):
        """``x`` times each sample's KEEP mask over the last axis: ``(batch, units)``, or feature maps
        ``(batch, ..., channels)`` where a channel is kept or dropped at every position and its class statistic
        is its mean over the positions."""
        masks = ops.cast(self.class_masks.value, x.dtype)
        positions = tuple(range(1, len(x.shape) - 1))
        stats = ops.mean(x, axis=positions) if positions else x  # (batch, units)
        refreshed = ops.convert_to_tensor(self.refreshed.value) > 0
        if training and self.refresh_schedule == "step":
            split_counts = ops.cast(self.mask_split_counts.value, x.dtype)
            train_means, train_counts = class_means(stats, mask_class, self.num_classes)
            fresh = refreshed_class_masks(train_means, train_counts, ops.cast(self.mask_split_means.value, x.dtype),
                                          split_counts, masks, self.n_drop)
            ready = ops.sum(split_counts) > 0  # the callback has stored the mask split's class means
            masks = ops.where(ready, fresh, masks)
            refreshed = ops.logical_or(refreshed, ready)
            self.class_masks.assign(ops.cast(masks, self.class_masks.dtype))
            self.refreshed.assign(ops.cast(refreshed, self.refreshed.dtype))
        elif training and self.refresh_schedule == "epoch":
            sums, counts = class_sums(ops.stop_gradient(stats), mask_class, self.num_classes)
            self.epoch_sums.assign(self.epoch_sums.value + ops.cast(sums, self.epoch_sums.dtype))
            self.epoch_counts.assign(self.epoch_counts.value + ops.cast(counts, self.epoch_counts.dtype))
        has_class = (mask_class >= 0)[:, None]
        per_sample = ops.take(masks, ops.clip(mask_class, 0, self.num_classes - 1), axis=0)
        per_sample = ops.where(has_class, per_sample, ops.ones_like(per_sample))
        broadcast = (-1,) + (1,) * len(positions) + (self.units,)  # a channel's keep at every position
        if training:
            # before the first refresh: Bernoulli dropout of units (of whole channels on feature maps)
            bernoulli = ops.cast(keras.random.uniform(ops.shape(stats), seed=self.seed_generator) >= self.rate,
                                 x.dtype)
            keep = ops.where(refreshed, per_sample, bernoulli)
            return x * ops.reshape(keep, broadcast) / (1.0 - self.rate)
        scaled = ops.where(has_class, per_sample * self.inference_scale, per_sample)
        return x * ops.reshape(ops.where(refreshed, scaled, ops.ones_like(scaled)), broadcast)

    def _check_eager_classes(self, mask_class, x):
        try:
            concrete = np.asarray(ops.convert_to_numpy(mask_class)).reshape(-1)
        except Exception:  # symbolic inside a traced function: values unknown
            return
        if x.shape[0] is not None and concrete.shape[0] != x.shape[0]:
            raise ValueError(f"mask_class has {concrete.shape[0]} entries for a batch of {x.shape[0]}.")
        if np.issubdtype(concrete.dtype, np.floating) and (np.isnan(concrete).any() or
                                                           (concrete != np.floor(concrete)).any()):
            raise ValueError(f"mask_class must hold integer classes (-1: no mask). Received non-integer values: "
                             f"{np.unique(concrete[np.isnan(concrete) | (concrete != np.floor(concrete))])[:10]}")
        bad = concrete[(concrete < -1) | (concrete >= self.num_classes)]
        if bad.size:
            raise ValueError(f"mask_class must lie in [-1, {self.num_classes}) (-1: no mask). "
                             f"Received out of range: {np.unique(bad)[:10].tolist()}")

    # --------------------------------------------------------------------------------------- mask refresh
    def refresh(self, train_activations, train_labels, mask_activations, mask_labels) -> list[int]:
        """Recompute the class masks from concrete activations (the ``"epoch"`` schedule; callable by hand).

        ``train_*`` and ``mask_*``: ``(N, units)`` activations entering this layer and their ``(N,)`` labels.
        Every class must occur in the mask split (ValueError otherwise). Returns the classes absent from the
        training side, whose masks were kept unchanged.
        """
        self._require_built("refresh")
        train_activations = _check_activations(train_activations, self.units, "train_activations")
        mask_activations = _check_activations(mask_activations, self.units, "mask_activations")
        train_labels = _check_labels(train_labels, self.num_classes, "train_labels", len(train_activations))
        mask_labels = self._check_mask_split_labels(mask_labels, len(mask_activations))
        train_means, train_counts = class_means(train_activations, train_labels, self.num_classes)
        mask_means, mask_counts = class_means(mask_activations, mask_labels, self.num_classes)
        self.class_masks.assign(refreshed_class_masks(train_means, train_counts, mask_means, mask_counts,
                                                      self.class_masks.value, self.n_drop))
        self.refreshed.assign(1.0)
        self._reset_epoch_sums()
        return sorted(set(range(self.num_classes)) - set(np.unique(train_labels).tolist()))

    def refresh_from_epoch(self, mask_activations, mask_labels) -> list[int]:
        """Recompute the class masks from the class means of the activations this epoch's training steps saw
        (accumulated in the graph, no extra pass over the training data) against the mask split's; then reset
        the accumulators. Returns the classes no training step saw, whose masks were kept unchanged."""
        self._require_built("refresh_from_epoch")
        mask_activations = _check_activations(mask_activations, self.units, "mask_activations")
        mask_labels = self._check_mask_split_labels(mask_labels, len(mask_activations))
        return self._refresh_from_epoch_means(*class_means(mask_activations, mask_labels, self.num_classes))

    def _refresh_from_epoch_means(self, mask_means, mask_counts) -> list[int]:
        counts = self.epoch_counts.value
        train_means = self.epoch_sums.value / ops.maximum(counts, 1.0)[:, None]
        self.class_masks.assign(refreshed_class_masks(train_means, counts, mask_means, mask_counts,
                                                      self.class_masks.value, self.n_drop))
        self.refreshed.assign(1.0)
        absent = np.flatnonzero(np.asarray(ops.convert_to_numpy(counts)) == 0).tolist()
        self._reset_epoch_sums()
        return absent

    def _refresh_from_means(self, train_means, train_counts, mask_means, mask_counts) -> None:
        """New masks from both sides' class means; a class absent on either side keeps its mask."""
        self.class_masks.assign(refreshed_class_masks(train_means, train_counts, mask_means, mask_counts,
                                                      self.class_masks.value, self.n_drop))
        self.refreshed.assign(1.0)
        self._reset_epoch_sums()

    def _reset_epoch_sums(self) -> None:
        """A refresh closes an epoch: the next one sums its training activations from zero."""
        self.epoch_sums.assign(ops.zeros_like(self.epoch_sums.value))
        self.epoch_counts.assign(ops.zeros_like(self.epoch_counts.value))

    def set_mask_split(self, mask_activations, mask_labels) -> None:
        """Store the mask split's class means for the ``"step"`` schedule (the next training step uses them)."""
        self._require_built("set_mask_split")
        mask_activations = _check_activations(mask_activations, self.units, "mask_activations")
        mask_labels = self._check_mask_split_labels(mask_labels, len(mask_activations))
        self._assign_mask_split(*class_means(mask_activations, mask_labels, self.num_classes))

    def _assign_mask_split(self, means, counts) -> None:
        self.mask_split_means.assign(means)
        self.mask_split_counts.assign(counts)

    def set_class_masks(self, masks) -> None:
        """Assign the ``(num_classes, units)`` KEEP masks (0/1) directly and mark the layer as refreshed."""
        self._require_built("set_class_masks")
        masks = np.asarray(masks, dtype=np.float32)
        if masks.shape != (self.num_classes, self.units):
            raise ValueError(f"masks must have shape ({self.num_classes}, {self.units}). Received: {masks.shape}")
        if not np.all((masks == 0) | (masks == 1)):
            raise ValueError(f"masks must hold only 0 and 1. Received values: {np.unique(masks)[:10].tolist()}")
        self.class_masks.assign(masks)
        self.refreshed.assign(1.0)

    def get_class_masks(self) -> np.ndarray:
        """The current ``(num_classes, units)`` KEEP masks as NumPy."""
        self._require_built("get_class_masks")
        return np.asarray(ops.convert_to_numpy(self.class_masks))

    @property
    def is_refreshed(self) -> bool:
        return self.built and float(ops.convert_to_numpy(self.refreshed)) > 0

    def _check_mask_split_labels(self, labels, n_rows: int) -> np.ndarray:
        labels = _check_labels(labels, self.num_classes, "mask_labels", n_rows)
        missing = sorted(set(range(self.num_classes)) - set(np.unique(labels).tolist()))
        if missing:
            raise ValueError(f"The mask split must contain every class, to give each class a mask. "
                             f"Received no sample of classes {missing} among {len(labels)} mask-split labels.")
        return labels

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"Layer {self.name!r} is not built yet: call it (or build its model) before {what}.")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "num_classes": self.num_classes, "refresh": self.refresh_schedule,
                       "rescale_inference": self.rescale_inference, "seed": self.seed})
        return config


# ------------------------------------------------------------------------------------- model-level helpers

# rows x units handled per tail call when all class masks run at once: ~16 MB of float32
_CHUNK_ELEMENTS = 1 << 22


def find_nsdropout(model: keras.Model, layer=None) -> NSDropout:
    """The model's NSDropout layer: ``layer`` (name or object) if given, else the only one in the model."""
    if layer is not None:
        found = layer if isinstance(layer, keras.layers.Layer) else model.get_layer(layer)
        if not isinstance(found, NSDropout):
            raise ValueError(f"Layer {found.name!r} is a {type(found).__name__}, not an NSDropout.")
        return found
    found = [l for l in model.layers if isinstance(l, NSDropout)]
    if len(found) != 1:
        raise ValueError(f"Model {model.name!r} must contain exactly one NSDropout layer (or pass layer=). "
                         f"Received: {len(found)} ({[l.name for l in found]})")
    return found[0]


class NSDropoutPredictor:
    """Label-free inference for a functional model ``[x, mask_class] -> outputs`` with one NSDropout layer.

    The model is split at the layer: ``head`` (x -> the layer's input activations) runs once per call, ``tail``
    (the layer's output -> model outputs) runs on the activations multiplied by whichever class masks a mode
    needs. ``mask_class`` must be a direct model input feeding the layer, and the outputs must depend on x only
    through the layer. Modes: see the module doc (``none``, ``predicted``, ``all``, ``oracle``).
    """

    def __init__(self, model: keras.Model, layer=None):
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model holding an NSDropout layer. Received: model of type "
                             f"{type(model).__name__}")
        self.model = model
        self.layer = find_nsdropout(model, layer)
        activations, class_input = self.layer.input
        if not any(class_input is t for t in model.inputs):
            raise ValueError(f"The mask_class input of {self.layer.name!r} must be an input of model "
                             f"{model.name!r}. Received model inputs: {[t.name for t in model.inputs]}")
        x_inputs = [t for t in model.inputs if t is not class_input]
        if len(x_inputs) != 1:
            raise ValueError(f"NSDropoutPredictor needs a model with one data input besides mask_class. "
                             f"Received data inputs: {[t.name for t in x_inputs]}")
        self.head = keras.Model(x_inputs, activations, name=f"{model.name}_head")
        try:
            self.tail = keras.Model(self.layer.output, model.outputs, name=f"{model.name}_tail")
        except ValueError as exc:
            raise ValueError(f"The outputs of {model.name!r} must depend on x only through {self.layer.name!r} "
                             f"for mask-by-mask inference: {exc}") from exc

    def hidden(self, x) -> np.ndarray:
        """``(N, units)`` activations entering the NSDropout layer (``(N, ..., channels)`` for feature maps)."""
        x = _check_inputs(x, "x")
        return _predict_padded(self.head, x, max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(x.shape[1:])))))

    def _tail(self, rows: np.ndarray) -> np.ndarray:
        return _predict_padded(self.tail, rows, max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(rows.shape[1:])))))

    def _masked(self, hidden: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Tail outputs with sample i masked by the mask of ``classes[i]`` (identity before the first refresh)."""
        if not self.layer.is_refreshed:
            return self._tail(hidden)
        masks = self.layer.get_class_masks()[classes]  # (rows, units); on feature maps, every position
        masks = masks.reshape((len(classes),) + (1,) * (hidden.ndim - 2) + masks.shape[-1:])
        return self._tail(hidden * masks * np.float32(self.layer.inference_scale))

    def outputs_from_hidden(self, hidden, classes=None) -> np.ndarray:
        """Model outputs from activations ``hidden`` entering the layer (:meth:`hidden`): with no mask where
        ``classes`` is None, else sample i under the mask of ``classes[i]`` (what a label-free router chose)."""
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim < 2 or hidden.shape[-1] != self.layer.units:
            raise ValueError(f"hidden must have shape (N, {self.layer.units}) or (N, ..., {self.layer.units}). "
                             f"Received: shape {hidden.shape}")
        if classes is None:
            return self._tail(hidden)
        classes = _check_labels(classes, self.layer.num_classes, "classes", len(hidden))
        return self._masked(hidden, classes)

    def _under_every_mask(self, hidden: np.ndarray) -> np.ndarray:
        n, k = len(hidden), self.layer.num_classes
        tiled = np.tile(hidden, (k,) + (1,) * (hidden.ndim - 1))
        return self._masked(tiled, np.repeat(np.arange(k), n)).reshape(k, n, -1)

    def outputs_under_every_mask(self, x) -> tuple[np.ndarray, np.ndarray]:
        """``(plain, per_mask)``: outputs with no mask ``(N, C)`` and with each class mask ``(K, N, C)``."""
        hidden = self.hidden(x)
        return self._tail(hidden), self._under_every_mask(hidden)

    def predict_classes(self, x, mode: str, labels=None, all_rule: str = "consistent") -> np.ndarray:
        """``(N,)`` predicted classes under one inference ``mode``."""
        return self.predict_classes_by_mode(x, (mode,), labels, all_rule)[mode]

    def predict_classes_by_mode(self, x, modes, labels=None, all_rule: str = "consistent") -> dict:
        """``{mode: (N,) classes}`` for several modes, sharing one head pass (and the K masked passes of
        ``all`` with ``predicted`` / ``oracle``). ``labels`` is read by ``oracle`` only and refused otherwise."""
        modes = tuple(modes)
        unknown = [m for m in modes if m not in INFERENCE_MODES]
        if unknown or not modes:
            raise ValueError(f"modes must be among {INFERENCE_MODES}. Received: {modes}")
        if all_rule not in ALL_RULES:
            raise ValueError(f"all_rule must be one of {ALL_RULES}. Received: all_rule={all_rule!r}")
        outputs = int(self.model.outputs[0].shape[-1])
        by_class = [m for m in modes if m != "none"]
        if by_class and self.layer.num_classes != outputs:
            raise ValueError(f"Modes {by_class} read mask k as the mask of output class k, but layer "
                             f"{self.layer.name!r} has num_classes={self.layer.num_classes} masks for {outputs} "
                             f"outputs (a label-free router's routes?): use mode 'none', or predict_routed with "
                             f"the router.")
        if "oracle" in modes:
            if labels is None:
                raise ValueError("mode 'oracle' applies the TRUE label's mask (the original's label leak) and "
                                 "needs labels. Received: labels=None")
            labels = _check_labels(labels, self.layer.num_classes, "labels", len(x))
        elif labels is not None:
            raise ValueError(f"Only mode 'oracle' reads labels; modes {modes} decide from x alone. "
                             f"Received labels of shape {np.shape(labels)}")
        hidden = self.hidden(x)
        plain = self._tail(hidden)
        unmasked_prediction = plain.argmax(-1)
        per_mask = self._under_every_mask(hidden) if "all" in modes else None
        result = {}
        for mode in modes:
            if mode == "none":
                result[mode] = unmasked_prediction
            elif mode == "all":
                result[mode] = decide_from_all_masks(per_mask, all_rule)
            else:
                classes = unmasked_prediction if mode == "predicted" else labels
                outputs = (per_mask[classes, np.arange(len(hidden))] if per_mask is not None
                           else self._masked(hidden, classes))
                result[mode] = outputs.argmax(-1)
        return result


def _compile(function, variables):
    """``function()`` compiled: ``tf.function`` on TensorFlow; on JAX ``jax.jit`` of it as a pure function of the
    current values of ``variables`` (read through ``keras.StatelessScope``); as is elsewhere."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, autograph=False)
    if backend == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function()

        jitted = jax.jit(pure)
        return lambda: jitted([v.value for v in variables])
    return function


def _predict_padded(model: keras.Model, x: np.ndarray, chunk: int) -> np.ndarray:
    """``model`` on ``x`` in chunks of at most ``chunk`` rows, each padded to a power of two so a compiled
    predict function sees a handful of shapes instead of retracing for every new length."""
    chunk = 1 << (chunk.bit_length() - 1)
    outputs = []
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        padded_rows = 1 << max(0, (len(part) - 1).bit_length())
        padded = np.concatenate([part, np.zeros((padded_rows - len(part), *part.shape[1:]), part.dtype)])
        outputs.append(np.asarray(model.predict_on_batch(padded))[:len(part)])
    if not outputs:
        return np.zeros((0, *model.outputs[0].shape[1:]), dtype=np.float32)
    return np.concatenate(outputs)


def decide_from_all_masks(per_mask: np.ndarray, rule: str = "consistent") -> np.ndarray:
    """Decision of mode ``all`` from ``(K, N, C)`` outputs under each class mask (K == C), using no labels.

    ``consistent``: ``argmax_k per_mask[k, n, k]``; ``average``: ``argmax_c mean_k per_mask[k, n, c]``.
    """
    per_mask = np.asarray(per_mask)
    if per_mask.ndim != 3 or per_mask.shape[0] != per_mask.shape[2]:
        raise ValueError(f"per_mask must be (K, N, K): one output distribution per class mask. "
                         f"Received: shape {per_mask.shape}")
    if rule == "consistent":
        return np.einsum("knk->nk", per_mask).argmax(-1)
    if rule == "average":
        return per_mask.mean(axis=0).argmax(-1)
    raise ValueError(f"rule must be one of {ALL_RULES}. Received: rule={rule!r}")


def predict_classes(model: keras.Model, x, mode: str, labels=None, *, layer=None,
                    all_rule: str = "consistent") -> np.ndarray:
    """``(N,)`` classes of an NSDropout model under ``mode`` (``NSDropoutPredictor`` for repeated calls)."""
    return NSDropoutPredictor(model, layer).predict_classes(x, mode, labels, all_rule)


def _check_pair(data, what: str):
    """``(x, y)``: arrays of equal, non-zero length, x finite."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{what} must be a pair (x, y) of arrays. Received: {what} of type {type(data).__name__}")
    x, y = data
    if not hasattr(x, "__len__") or not hasattr(y, "__len__") or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what} must hold as many labels as inputs, at least one. Received: "
                         f"{len(x) if hasattr(x, '__len__') else type(x).__name__} inputs, "
                         f"{len(y) if hasattr(y, '__len__') else type(y).__name__} labels")
    _check_inputs(x, f"{what} x")
    return data


def _check_inputs(x, what: str) -> np.ndarray:
    if x is None or not hasattr(x, "__len__"):
        raise ValueError(f"{what} must be an array of inputs. Received: {type(x).__name__}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{what} must hold at least one sample. Received: shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values ({int((~np.isfinite(x)).sum())} of {x.size})")
    return x


class NSDropoutRefresh(keras.callbacks.Callback):
    """Refresh an NSDropout layer's masks at the end of every epoch, from data the caller names.

    ``mask_data``: ``(x, y)`` of the mask split (carved from the training data; never scored).

    * ``"epoch"`` schedule: the class masks are recomputed at every epoch end. The training side's class means
      are those of the activations the epoch's training steps saw (accumulated in the graph: no extra pass);
      with ``train_data=(x, y)`` they are instead recomputed exactly under the end-of-epoch weights, at the cost
      of one more forward pass over ``x``.
    * ``"step"``: only the mask split's class means are stored; the next training step recomputes the masks
      from its own batch.
    * ``"never"``: nothing happens.
    """

    def __init__(self, mask_data, train_data=None, layer=None, batch_size: int = 4096):
        super().__init__()
        self.mask_data = _check_pair(mask_data, "mask_data")
        self.train_data = None if train_data is None else _check_pair(train_data, "train_data")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
        self.layer_ref = layer
        self.batch_size = batch_size
        self.absent_classes = {}
        self._means_function = None

    def _mask_split_means(self):
        """The mask split's class means (and counts) under the current weights: the head's forward pass and the
        segment means in one compiled call (what the original's schedule adds to every full-batch step), instead
        of a predict call, a copy of the activations to NumPy and NumPy means."""
        if self._means_function is None:
            layer, head = self.predictor.layer, self.predictor.head
            x_mask, y_mask = self.mask_data
            x = ops.convert_to_tensor(np.asarray(x_mask, dtype=np.float32))
            y = ops.convert_to_tensor(np.asarray(y_mask, dtype=np.int32))

            def means():
                hidden = head(x, training=False)
                if len(hidden.shape) > 2:
                    hidden = ops.mean(hidden, axis=tuple(range(1, len(hidden.shape) - 1)))
                return class_means(hidden, y, layer.num_classes)

            self._means_function = _compile(means, head.variables)
        return self._means_function()

    def on_train_begin(self, logs=None):
        self.predictor = NSDropoutPredictor(self.model, self.layer_ref)
        layer = self.predictor.layer
        x_mask, y_mask = self.mask_data
        layer._check_mask_split_labels(y_mask, len(x_mask))
        if self.train_data is not None:
            _check_labels(self.train_data[1], layer.num_classes, "train labels", len(self.train_data[0]))

    def on_epoch_end(self, epoch, logs=None):
        layer = self.predictor.layer
        if layer.refresh_schedule == "never":
            return
        x_mask, y_mask = self.mask_data
        if layer.refresh_schedule == "step":
            layer._assign_mask_split(*self._mask_split_means())
        else:
            if self.train_data is None:
                absent = layer._refresh_from_epoch_means(*self._mask_split_means())
            else:
                x_train, y_train = self.train_data
                absent = layer.refresh(self.predictor.hidden(x_train), y_train, self.predictor.hidden(x_mask),
                                       y_mask)
            if absent:
                self.absent_classes[epoch + 1] = absent

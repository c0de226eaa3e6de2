"""Label-free routing for NSDropout: which mask each sample gets, decided from the sample alone.

NSDropout as published routes every training sample to the mask of its TRUE class, so at inference a label is
needed that a deployed model does not have (the original read it from the test set: the label leak). A router
replaces the label by something the model can compute from ``x`` both in training and at inference:

* :class:`PredictedClassRouter`: the class the model itself predicts without a mask;
* :class:`ClusterRouter`: the nearest of ``num_clusters`` k-means centres of the layer's input activations
  (label-free; the centres are refitted on the training activations as training goes on, warm-started so that
  cluster ``k`` stays cluster ``k``);
* :class:`SingleMaskRouter`: every sample to mask 0: ONE data-dependent mask for all samples (the layer built
  with ``num_classes=1``), which drops the units whose training mean most exceeds their mask-split mean.

The masks themselves are computed as NSDropout always does (per route: training mean minus mask-split mean,
the ``round(units * rate)`` largest dropped), with the mask split routed by the same router. A route that no
training or no mask-split sample takes keeps its previous mask (all ones before its first refresh); the callback
records such routes per epoch (``absent_routes``) instead of failing, since early in training a router may leave
a class or cluster empty.

:class:`NSDropoutRouting` is the callback that keeps the routes current (it replaces ``NSDropoutRefresh``; do
not use both; and not with ``model.fit``, which it refuses): at the start of training it routes the training data; at every epoch end it refits the router on
the training activations, recomputes the routes of the training data and of the mask split, and recomputes the
masks from both under that one router state (with the ``"step"`` schedule it also stores the mask split's
per-route means, from which every step recomputes the masks on its own batch). Routes, masks and the router
state therefore always belong together: in the next epoch's steps, and for any evaluation at the epoch's end.
:func:`fit_routed` trains with them (full batch or mini-batches): routes computed at the end of epoch ``e``
route the steps of epoch ``e + 1``. At inference, :func:`predict_routed` routes and masks in one call.

A router holds state (k-means centres) that belongs to ONE trained model: use one router per model, and save
``router.get_state()`` next to the model (``set_state`` after loading) to route as in training. The model's
outputs must depend on ``x`` only through the NSDropout layer (``NSDropoutPredictor`` splits the model there):
the layer may sit on the main path of a residual network, after an ``Add``, but not inside a residual branch.
"""

from __future__ import annotations

import keras
import numpy as np

from masklab.layers.nsdropout import NSDropoutPredictor, _check_inputs, class_means


def _statistics(hidden: np.ndarray) -> np.ndarray:
    """``(N, units)``: feature maps reduced to each channel's mean over the positions."""
    return hidden.mean(axis=tuple(range(1, hidden.ndim - 1))) if hidden.ndim > 2 else hidden


class Router:
    """How a sample is routed to a mask without its label. Subclasses define :meth:`route`; :meth:`fit` (called
    at train begin and every epoch end with the training activations) and the state methods are optional.

    ``num_routes``: the rows of the mask table the router needs (the layer's ``num_classes``); None when it is
    the model's number of outputs."""

    name = "router"
    num_routes: int | None = None

    def fit(self, predictor: NSDropoutPredictor, hidden: np.ndarray, epoch: int) -> None:
        """Update the router from the training activations ``hidden`` (``epoch``: epochs completed)."""

    def route(self, predictor: NSDropoutPredictor, hidden: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def get_state(self):
        """What :meth:`set_state` needs to route as now (saved with a chosen epoch's weights)."""
        return None

    def set_state(self, state) -> None:
        pass


class PredictedClassRouter(Router):
    """Route each sample to the mask of the class the model predicts for it with no mask (the same two passes
    as ``NSDropoutPredictor``'s ``"predicted"`` mode, now also in training)."""

    name = "predicted class"

    def route(self, predictor, hidden):
        return predictor.outputs_from_hidden(hidden).argmax(-1)


class SingleMaskRouter(Router):
    """Every sample to mask 0: one class-free mask (build the layer with ``num_classes=1``)."""

    name = "single mask"
    num_routes = 1

    def route(self, predictor, hidden):
        return np.zeros(len(hidden), dtype=np.int64)


class ClusterRouter(Router):
    """Route each sample to the nearest of ``num_clusters`` k-means centres of the layer's input activations
    (channel means on feature maps).

    Args:
        num_clusters: clusters = rows of the mask table (the layer's ``num_classes``), >= 2.
        refit_every: refit the centres every this many epochs (1: every epoch); in between, samples are still
            re-assigned every epoch to the nearest current centre.
        seed: seed of the first k-means++ initialisation; later fits start from the current centres (one
            initialisation), so cluster ``k`` keeps its identity and its mask.
        max_iter: Lloyd iterations per fit.
    """

    name = "k-means cluster"

    def __init__(self, num_clusters: int, refit_every: int = 1, seed: int = 0, max_iter: int = 100):
        for name, value, low in (("num_clusters", num_clusters, 2), ("refit_every", refit_every, 1),
                                 ("max_iter", max_iter, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
        self.num_routes = int(num_clusters)
        self.refit_every, self.seed, self.max_iter = int(refit_every), int(seed), int(max_iter)
        self.centers, self.converged = None, True

    def fit(self, predictor, hidden, epoch):
        """k-means on the training activations (every ``refit_every`` epochs, warm-started after the first).
        ``converged`` is False after a fit that stopped at ``max_iter`` or found fewer distinct points than
        clusters (sklearn then returns duplicate centres: some route is left empty, see ``absent_routes``)."""
        if self.centers is not None and epoch % self.refit_every:
            return
        import warnings

        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        points = _statistics(hidden).astype(np.float64)
        if len(points) < self.num_routes:
            raise ValueError(f"k-means with {self.num_routes} clusters needs at least as many training samples. "
                             f"Received: {len(points)}")
        init = "k-means++" if self.centers is None else self.centers
        kmeans = KMeans(self.num_routes, init=init, n_init=1, max_iter=self.max_iter, random_state=self.seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            kmeans.fit(points)
        self.converged = kmeans.n_iter_ < self.max_iter and not any(
            issubclass(w.category, ConvergenceWarning) for w in caught)
        self.centers = kmeans.cluster_centers_

    def route(self, predictor, hidden):
        if self.centers is None:
            raise ValueError("ClusterRouter has no centres yet: fit it on training activations first "
                             "(NSDropoutRouting does so at train begin).")
        points = _statistics(hidden).astype(np.float64)
        if points.shape[-1] != self.centers.shape[-1]:
            raise ValueError(f"hidden has {points.shape[-1]} units (channels), the centres "
                             f"{self.centers.shape[-1]}: route the activations of the layer the router was fit on.")
        # squared distances without the (N, K, units) difference tensor
        distances = (points ** 2).sum(1)[:, None] - 2 * points @ self.centers.T + (self.centers ** 2).sum(1)
        return distances.argmin(-1)

    def get_state(self):
        return None if self.centers is None else self.centers.copy()

    def set_state(self, state):
        if state is not None and (np.ndim(state) != 2 or np.shape(state)[0] != self.num_routes):
            raise ValueError(f"state must be ({self.num_routes}, units) centres or None. Received: shape "
                             f"{np.shape(state)}")
        self.centers = None if state is None else np.array(state, dtype=np.float64)


def _check_router(router, layer, model) -> None:
    if not isinstance(router, Router):
        raise ValueError(f"router must be a masklab Router (PredictedClassRouter, ClusterRouter, "
                         f"SingleMaskRouter, ...). Received: {type(router).__name__}")
    needed = router.num_routes if router.num_routes is not None else int(model.outputs[0].shape[-1])
    if layer.num_classes != needed:
        raise ValueError(f"{type(router).__name__} routes to {needed} masks, but NSDropout layer {layer.name!r} "
                         f"has num_classes={layer.num_classes}: build the layer with num_classes={needed}.")


def predict_routed(predictor: NSDropoutPredictor, router: Router, x) -> np.ndarray:
    """``(N, C)`` model outputs with each sample of ``x`` under the mask its router chooses (no label read)."""
    _check_router(router, predictor.layer, predictor.model)
    hidden = predictor.hidden(x)
    return predictor.outputs_from_hidden(hidden, router.route(predictor, hidden))


def fit_routed(model: keras.Model, routing: "NSDropoutRouting", y, *, epochs: int, batch_size: int | None = None,
               callbacks=(), seed: int = 0) -> list[dict]:
    """Train ``model`` for ``epochs`` under ``routing``'s current routes: each step's inputs are
    ``[x_rows, routes_rows]``; ``batch_size=None`` is one full-batch step per epoch, else mini-batches in a seeded
    order (``seed + epoch``). ``routing`` runs first among the callbacks, so the routes that a later callback
    (or the next epoch) sees are those of the end-of-epoch weights. Returns the per-epoch logs of the last step.

    With the ``"step"`` schedule and mini-batches, every step recomputes the masks from its own batch (the
    per-batch class means against the stored mask-split means); ``keras.callbacks.EarlyStopping`` and other
    callbacks that set ``model.stop_training`` end the loop after the epoch; batch-level hooks are not called.

    A loop of ``train_on_batch`` rather than ``fit``: ``fit`` builds the next epoch's input pipeline (and may
    prefetch from it) before the epoch-end callbacks run, so a batch could carry routes of an older epoch.
    """
    if not isinstance(routing, NSDropoutRouting):
        raise ValueError(f"routing must be an NSDropoutRouting callback. Received: {type(routing).__name__}")
    y = np.asarray(y)
    if len(y) != len(routing.train_x):
        raise ValueError(f"y has {len(y)} labels for {len(routing.train_x)} training inputs of the routing.")
    for name, value in (("epochs", epochs), ("batch_size", 1 if batch_size is None else batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "epochs" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'epochs' else 'positive'} integer"
                             f"{' or None (full batch)' if name == 'batch_size' else ''}. Received: "
                             f"{name}={epochs if name == 'epochs' else batch_size!r}")
    callback_list = keras.callbacks.CallbackList([routing, *callbacks], model=model)
    steps = 1 if batch_size is None else -(-len(y) // batch_size)
    callback_list.set_params({"epochs": epochs, "steps": steps, "verbose": 0})
    model.stop_training = False
    callback_list.on_train_begin()
    history = []
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        if batch_size is None or batch_size >= len(y):
            batches = [np.arange(len(y))]
        else:
            order = np.random.default_rng(seed + epoch).permutation(len(y))
            batches = [order[i:i + batch_size] for i in range(0, len(y), batch_size)]
        for rows in batches:
            inputs = [routing.train_x[rows], routing.train_routes[rows].astype(np.float32)]
            logs = model.train_on_batch(inputs, y[rows], return_dict=True)
        callback_list.on_epoch_end(epoch, logs)
        history.append(dict(logs))
        if model.stop_training:  # e.g. keras.callbacks.EarlyStopping
            break
    callback_list.on_train_end()
    return history


class NSDropoutRouting(keras.callbacks.Callback):
    """Keep an NSDropout layer's routes and masks current with a label-free ``router`` (module doc).

    Args:
        router: a :class:`Router`.
        train_x: the training inputs (the routes of ``train_x[i]`` are ``train_routes[i]``).
        mask_x: the mask split's inputs (carved from the training data, never scored); its labels are not used.
        layer: the NSDropout layer (name or object) when the model has several.

    Train with :func:`fit_routed` (full batch with the ``"step"`` schedule, mini-batches with ``"epoch"``).
    ``train_routes``: the current route of every training sample; ``route_counts``: per epoch (the first entry:
    at train begin), how many training samples each route received; ``mask_route_counts``: the same for the mask
    split, per epoch end; ``absent_routes``: ``{epoch: routes}`` that no training or no mask-split sample took at
    that epoch's end (their masks were kept). With either schedule the masks are recomputed at every epoch end
    from the end-of-epoch activations (one pass over ``train_x`` and ``mask_x``, which the new routes need anyway).
    """

    def __init__(self, router: Router, train_x, mask_x, layer=None):
        super().__init__()
        if not isinstance(router, Router):
            raise ValueError(f"router must be a masklab Router. Received: {type(router).__name__}")
        self.router, self.layer_ref = router, layer
        self.train_x = _check_inputs(train_x, "train_x")
        self.mask_x = _check_inputs(mask_x, "mask_x")
        self.train_routes = None
        self.route_counts, self.mask_route_counts, self.absent_routes = [], [], {}

    def on_train_begin(self, logs=None):
        self.predictor = NSDropoutPredictor(self.model, self.layer_ref)
        _check_router(self.router, self.predictor.layer, self.model)
        if self.predictor.layer.refresh_schedule == "never":
            raise ValueError(f"Layer {self.predictor.layer.name!r} has refresh='never': routes would change but its "
                             f"masks never would. Use refresh='step' or 'epoch'.")
        data_input = self.predictor.head.inputs[0]
        for name, x in (("train_x", self.train_x), ("mask_x", self.mask_x)):
            expected = tuple(data_input.shape[1:])
            if len(x.shape[1:]) != len(expected) or any(e is not None and e != a
                                                         for e, a in zip(expected, x.shape[1:])):
                raise ValueError(f"{name} must have shape (N, {', '.join(map(str, expected))}), the model's input "
                                 f"{data_input.name!r}. Received: shape {x.shape}")
        hidden = self.predictor.hidden(self.train_x)
        self.router.fit(self.predictor, hidden, 0)
        self._route_training_data(hidden)

    def on_train_batch_begin(self, batch, logs=None):
        raise ValueError("NSDropoutRouting was passed to model.fit: fit feeds the mask_class input from your data, "
                         "not from the router's routes, so training and masks would disagree. Train with "
                         "masklab.layers.fit_routed(model, routing, y, ...).")

    def _route_training_data(self, hidden):
        self.train_routes = np.asarray(self.router.route(self.predictor, hidden), dtype=np.int64)
        self.route_counts.append(np.bincount(self.train_routes, minlength=self.predictor.layer.num_classes))

    def on_epoch_end(self, epoch, logs=None):
        layer = self.predictor.layer
        train_hidden = self.predictor.hidden(self.train_x)
        self.router.fit(self.predictor, train_hidden, epoch + 1)
        self._route_training_data(train_hidden)
        mask_hidden = self.predictor.hidden(self.mask_x)
        mask_routes = np.asarray(self.router.route(self.predictor, mask_hidden), dtype=np.int64)
        self.mask_route_counts.append(np.bincount(mask_routes, minlength=layer.num_classes))
        train_means = class_means(_statistics(train_hidden), self.train_routes, layer.num_classes)
        mask_means = class_means(_statistics(mask_hidden), mask_routes, layer.num_classes)
        # masks for the new router state now (what an evaluation at this epoch's end sees); under "step" every
        # next step recomputes them on its own batch against the stored mask-split means
        layer._refresh_from_means(*train_means, *mask_means)
        if layer.refresh_schedule == "step":
            layer._assign_mask_split(*mask_means)
        absent = np.flatnonzero((self.route_counts[-1] == 0) | (self.mask_route_counts[-1] == 0)).tolist()
        if absent:
            self.absent_routes[epoch + 1] = absent

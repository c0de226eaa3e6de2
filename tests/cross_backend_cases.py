"""The same weights on every backend: each case builds a small model, sets weights drawn by NumPy from fixed seeds
(not Keras initializers, which differ by backend), and returns what masklab computes with it. test_cross_backend.py
runs :func:`compute` under TensorFlow in its own process and under JAX in a subprocess and compares the two.

Run as a script (``python cross_backend_cases.py out.npz``) it saves the results of the backend of KERAS_BACKEND."""

import sys

import keras
import numpy as np

from masklab import ablation, models, surgery
from masklab.layers import NeuronMask, NSDropout, NSDropoutPredictor, SparseDense
from masklab.layers.nsdropout import INFERENCE_MODES

L = keras.layers


def _set_numpy_weights(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])


def neuron_mask_case(out):
    x, masks = keras.Input((8,)), keras.Input((6,))
    hidden = L.Dense(6, activation="relu")(x)
    model = keras.Model([x, masks], L.Dense(3)(NeuronMask()([hidden, masks])))
    _set_numpy_weights(model, 1)
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(10, 8)).astype("float32")
    keep = rng.random((10, 6)).astype("float32")  # fractional keeps too
    keep[:, 0] = 0.0
    out["neuron_mask/predict"] = model.predict([inputs, keep], verbose=0)
    out["neuron_mask/call"] = np.asarray(model([inputs, keep]))


def sparse_dense_case(out):
    rng = np.random.default_rng(3)
    mask = rng.random((30, 7)) < 0.25
    mask[0] = True
    kernel, bias = (rng.normal(size=(30, 7)) * mask).astype("float32"), rng.normal(size=7).astype("float32")
    x = rng.normal(size=(12, 30)).astype("float32")
    for implementation in ("dense", "sparse"):
        layer = SparseDense(7, mask, activation="relu", implementation=implementation)
        layer.build((None, 30))
        layer.set_kernel(kernel)
        layer.bias.assign(bias)
        out[f"sparse_dense/{implementation}"] = np.asarray(layer(x))
        model = keras.Sequential([keras.Input((30,)), layer])
        out[f"sparse_dense/{implementation}/predict"] = model.predict(x, verbose=0)


def nsdropout_case(out):
    model = models.dropout_mlp(8, (6, 5), 3, dropout="nsdropout", rate=0.4, refresh="never", seed=0)
    _set_numpy_weights(model, 4)
    layer = model.get_layer("dropout")
    assert isinstance(layer, NSDropout)
    rng = np.random.default_rng(5)
    train_h, mask_h = np.abs(rng.normal(size=(40, 6))).astype("float32"), np.abs(rng.normal(size=(20, 6)))
    train_y, mask_y = np.arange(40) % 3, np.arange(20) % 3
    layer.refresh(train_h, train_y, mask_h.astype("float32"), mask_y)
    out["nsdropout/class_masks"] = layer.get_class_masks().astype("float32")
    x = rng.normal(size=(15, 8)).astype("float32")
    labels = np.arange(15) % 3
    predictor = NSDropoutPredictor(model)
    plain, per_mask = predictor.outputs_under_every_mask(x)
    out["nsdropout/plain"], out["nsdropout/per_mask"] = plain, per_mask
    by_mode = predictor.predict_classes_by_mode(x, INFERENCE_MODES, labels=labels)
    for mode in INFERENCE_MODES:
        out[f"nsdropout/classes/{mode}"] = by_mode[mode].astype("float32")
    out["nsdropout/with_labels"] = model.predict([x, labels.astype("float32")], verbose=0)


def mlp():
    model = keras.Sequential([keras.Input((8,)), L.Dense(10, activation="relu", name="hidden"),
                              L.Dense(6, activation="relu", name="hidden_2"), L.Dense(3, name="out")])
    _set_numpy_weights(model, 6)
    return model


def ablation_case(out):
    model = mlp()
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 8)).astype("float32")
    masks = (rng.random((5, 10)) > 0.4).astype("float32")
    out["ablation/zero"] = ablation.predict_with_masks(model, "hidden", x, masks)
    out["ablation/mean"] = ablation.predict_with_masks(model, "hidden", x, masks, replacement="mean",
                                                       reference_x=x[:10])
    out["ablation/two_layers"] = ablation.predict_with_masks(
        model, {"hidden": masks, "hidden_2": (rng.random((5, 6)) > 0.5).astype("float32")}, x)


def surgery_case(out):
    model = mlp()
    x = np.random.default_rng(8).normal(size=(20, 8)).astype("float32")
    out["surgery/remove_units"] = surgery.remove_units(model, "hidden", [1, 3, 4]).predict(x, verbose=0)
    result = surgery.prune(model, 0.5, criterion="l2", x=x)
    out["surgery/prune/outputs"] = result.model.predict(x, verbose=0)
    for name, removed in sorted(result.removed.items()):
        out[f"surgery/prune/removed/{name}"] = np.asarray(removed, dtype="float32")


def compute() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for case in (neuron_mask_case, sparse_dense_case, nsdropout_case, ablation_case, surgery_case):
        case(out)
    return {key: np.asarray(value) for key, value in out.items()}


if __name__ == "__main__":
    np.savez(sys.argv[1], backend=keras.config.backend(), **compute())

"""Every bad input to the public API gets a clear error: a ValueError (or TypeError) raised by masklab before any
work, whose message names the parameter and shows what was received. One table, by function and category
(None, wrong type, empty, NaN / inf, out of range, not an integer, wrong shape, seeds, unbuilt layers); the data
API's cases live in test_data.py / test_splits.py. The README's "Reliability" count comes from this table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import pytest

from masklab import ablation, surgery, training
from masklab import models
from masklab.layers import (ClusterRouter, CurriculumDropout, NSDropoutRouting, PredictedClassRouter, SingleMaskRouter,
                            TargetedDropout, fit_routed, predict_routed)
from masklab.layers import (Connectivity, NeuronMask, NSDropout, NSDropoutPredictor, NSDropoutRefresh, SparseDense,
                            connectivity_hierarchy, keep_from_off, keep_mask, keep_masks, local_receptive_fields,
                            validate_mask)

L = keras.layers
NAN = float("nan")


@dataclass
class Case:
    id: str
    call: Callable
    parameter: str      # the message must name it
    received: str       # a regex the message must match: what was received


def mlp():
    keras.utils.set_random_seed(0)
    inputs = L.Input((6,))
    hidden = L.Dense(8, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, L.Dense(3, activation="softmax", name="out")(hidden))


def attention():
    keras.utils.set_random_seed(0)
    tokens = L.Input((4, 8))
    return keras.Model(tokens, L.MultiHeadAttention(2, 4, name="mha")(tokens, tokens))


MODEL, ATTENTION = mlp(), attention()


def tokens():
    ids = L.Input((5,), dtype="int32")
    return keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(L.Embedding(9, 4, name="emb")(ids))))


TOKENS = tokens()
NSD = models.dropout_mlp(6, (5,), 3, rate=0.4, refresh="epoch", seed=0)
X = np.random.default_rng(0).normal(size=(10, 6)).astype("float32")
Y = np.arange(10) % 3
X_NAN = X.copy()
X_NAN[3, 2] = np.nan
ONES = np.ones((1, 8), "float32")
BUILD = mlp


def built_sparse(matrix=None):
    layer = SparseDense(2, np.ones((3, 2)) if matrix is None else matrix)
    layer.build((None, 3))
    return layer


def unbuilt(layer, method, *args):
    return lambda: getattr(layer, method)(*args)


CASES = [
    # --- layers: masks ---------------------------------------------------------------------------------------
    Case("keep_mask/units None", lambda: keep_mask(None), "units", "None"),
    Case("keep_mask/units 0", lambda: keep_mask(0), "units", "units=0"),
    Case("keep_mask/units 2.5", lambda: keep_mask(2.5), "units", "2.5"),
    Case("keep_mask/units True", lambda: keep_mask(True), "units", "True"),
    Case("keep_mask/units str", lambda: keep_mask("4"), "units", "'4'"),
    Case("keep_mask/drop None", lambda: keep_mask(5, None), "drop", "None"),
    Case("keep_mask/drop scalar", lambda: keep_mask(5, 3), "drop", "drop=3"),
    Case("keep_mask/drop str", lambda: keep_mask(5, "1"), "drop", "'1'"),
    Case("keep_mask/drop float", lambda: keep_mask(5, [1.5]), "drop", r"1\.5"),
    Case("keep_mask/drop out of range", lambda: keep_mask(5, [5]), "drop", r"\[5\]"),
    Case("keep_mask/drop negative", lambda: keep_mask(5, [-1]), "drop", r"\[-1\]"),
    Case("keep_mask/drop duplicates", lambda: keep_mask(5, [1, 1]), "drop", r"\[1\]"),
    Case("keep_mask/drop nested", lambda: keep_mask(5, [[1]]), "drop", r"\[\[1\]\]"),
    Case("keep_mask/drop bool", lambda: keep_mask(5, [True]), "drop", "True"),
    Case("keep_masks/drops None", lambda: keep_masks(5, [None]), "drop", "None"),
    Case("keep_from_off/soft", lambda: keep_from_off([0.5, 1]), "mask", r"0\.5"),
    Case("keep_from_off/NaN", lambda: keep_from_off([NAN, 1]), "mask", "nan"),
    Case("validate_mask/rank 3", lambda: validate_mask(np.ones((1, 1, 4)), 4), "mask", r"\(1, 1, 4\)"),
    Case("validate_mask/units", lambda: validate_mask(np.ones(3), 4), "mask", r"\(3,\)"),
    Case("validate_mask/NaN", lambda: validate_mask([NAN, 1, 1, 1], 4), "mask", "NaN"),
    Case("validate_mask/above 1", lambda: validate_mask([2.0, 1, 1, 1], 4), "mask", "max=2"),
    Case("validate_mask/below 0", lambda: validate_mask([-1.0, 1, 1, 1], 4), "mask", "min=-1"),
    Case("validate_mask/rows", lambda: validate_mask(np.ones((3, 4)), 4, batch_size=2), "mask", r"\(3, 4\)"),
    Case("NeuronMask/initial_mask", lambda: NeuronMask(initial_mask=[2.0, 1.0]), "initial_mask", "max=2"),
    Case("NeuronMask/initial_mask rank", lambda: NeuronMask(initial_mask=[[1.0, 1.0]]), "initial_mask", r"\(1, 2\)"),
    Case("NeuronMask/set_mask unbuilt", unbuilt(NeuronMask(name="m1"), "set_mask", [1.0]), "set_mask", "'m1'"),
    Case("NeuronMask/clear_mask unbuilt", unbuilt(NeuronMask(name="m2"), "clear_mask"), "clear_mask", "'m2'"),
    Case("NeuronMask/eager bad mask", lambda: NeuronMask()([ONES, 2 * ONES]), "mask", "max=2"),
    # --- layers: NSDropout -----------------------------------------------------------------------------------
    Case("NSDropout/rate 1.5", lambda: NSDropout(1.5, 3), "rate", "1.5"),
    Case("NSDropout/rate 0", lambda: NSDropout(0, 3), "rate", "rate=0"),
    Case("NSDropout/rate True", lambda: NSDropout(True, 3), "rate", "True"),
    Case("NSDropout/rate str", lambda: NSDropout("0.2", 3), "rate", "'0.2'"),
    Case("NSDropout/rate NaN", lambda: NSDropout(NAN, 3), "rate", "nan"),
    Case("NSDropout/num_classes 0", lambda: NSDropout(0.2, 0), "num_classes", "0"),
    Case("NSDropout/num_classes float", lambda: NSDropout(0.2, 2.5), "num_classes", "2.5"),
    Case("NSDropout/refresh", lambda: NSDropout(0.2, 3, refresh="sometimes"), "refresh", "'sometimes'"),
    Case("NSDropout/eager class 7", lambda: NSDropout(0.2, 3)([np.ones((2, 5), "float32"), np.array([0, 7])]),
         "mask_class", r"\[7\]"),
    Case("NSDropout/eager class 1.7",
         lambda: NSDropout(0.2, 3)([np.ones((2, 5), "float32"), np.array([0, 1.7])]), "mask_class", r"1\.7"),
    Case("NSDropoutRefresh/mask_data None", lambda: NSDropoutRefresh(mask_data=None), "mask_data", "NoneType"),
    Case("NSDropoutRefresh/mask_data lengths", lambda: NSDropoutRefresh((X, Y[:3])), "mask_data", "10 inputs, 3"),
    Case("NSDropoutRefresh/NaN x", lambda: NSDropoutRefresh((X_NAN, Y)), "mask_data", "NaN"),
    Case("NSDropoutRefresh/batch_size", lambda: NSDropoutRefresh((X, Y), batch_size=0), "batch_size", "0"),
    Case("NSDropoutPredictor/model None", lambda: NSDropoutPredictor(None), "model", "NoneType"),
    Case("NSDropoutPredictor/mode", lambda: NSDropoutPredictor(NSD).predict_classes(X, "best"), "modes", "best"),
    Case("NSDropoutPredictor/x None", lambda: NSDropoutPredictor(NSD).predict_classes(None, "none"), "x",
         "NoneType"),
    Case("NSDropoutPredictor/x empty", lambda: NSDropoutPredictor(NSD).predict_classes(X[:0], "none"), "x",
         r"\(0, 6\)"),
    Case("NSDropoutPredictor/NaN x", lambda: NSDropoutPredictor(NSD).predict_classes(X_NAN, "none"), "x", "NaN"),
    Case("NSDropoutPredictor/oracle without labels", lambda: NSDropoutPredictor(NSD).predict_classes(X, "oracle"),
         "labels", "None"),
    Case("NSDropoutPredictor/labels float", lambda: NSDropoutPredictor(NSD).predict_classes(
        X, "oracle", labels=Y + 0.5), "labels", r"0\.5|1\.5"),
    Case("NSDropoutPredictor/all_rule", lambda: NSDropoutPredictor(NSD).predict_classes(X, "all", all_rule="vote"),
         "all_rule", "'vote'"),
    # --- layers: label-free NSDropout routing, the dropout family ------------------------------------------------
    Case("CurriculumDropout/rate None", lambda: CurriculumDropout(None, 0.1), "rate", "None"),
    Case("CurriculumDropout/gamma negative", lambda: CurriculumDropout(0.2, -1), "gamma", "-1"),
    Case("CurriculumDropout/gamma str", lambda: CurriculumDropout(0.2, "fast"), "gamma", "'fast'"),
    Case("TargetedDropout/targeted_fraction 0", lambda: TargetedDropout(0.2, 0), "targeted_fraction", "0"),
    Case("TargetedDropout/rate True", lambda: TargetedDropout(True, 0.5), "rate", "True"),
    Case("TargetedDropout/magnitude", lambda: TargetedDropout(0.2, 0.5, magnitude="l2"), "magnitude", "'l2'"),
    Case("ClusterRouter/num_clusters 2.5", lambda: ClusterRouter(2.5), "num_clusters", "2.5"),
    Case("ClusterRouter/refit_every 0", lambda: ClusterRouter(3, refit_every=0), "refit_every", "0"),
    Case("NSDropoutRouting/router None", lambda: NSDropoutRouting(None, X, X), "router", "NoneType"),
    Case("NSDropoutRouting/NaN train_x", lambda: NSDropoutRouting(PredictedClassRouter(), X_NAN, X), "train_x", "NaN"),
    Case("NSDropoutRouting/empty mask_x", lambda: NSDropoutRouting(PredictedClassRouter(), X, X[:0]), "mask_x",
         r"\(0, 6\)"),
    Case("fit_routed/routing None", lambda: fit_routed(NSD, None, Y, epochs=1), "routing", "NoneType"),
    Case("fit_routed/epochs -1", lambda: fit_routed(NSD, NSDropoutRouting(PredictedClassRouter(), X, X), Y,
                                                    epochs=-1), "epochs", "-1"),
    Case("fit_routed/batch_size 0", lambda: fit_routed(NSD, NSDropoutRouting(PredictedClassRouter(), X, X), Y,
                                                       epochs=1, batch_size=0), "batch_size", "0"),
    Case("fit_routed/y length", lambda: fit_routed(NSD, NSDropoutRouting(PredictedClassRouter(), X, X), Y[:3],
                                                   epochs=1), "y", "3 labels"),
    Case("predict_routed/router for another table", lambda: predict_routed(NSDropoutPredictor(NSD),
                                                                           SingleMaskRouter(), X), "num_classes", "3"),
    Case("dropout_mlp/dropout_options", lambda: models.dropout_mlp(6, (5,), 3, dropout="targeted",
                                                                   dropout_options={"gamma": 1}), "dropout_options",
         "gamma"),
    Case("seed_cnn/dropout", lambda: models.seed_cnn(dropout="spatial"), "dropout", "'spatial'"),
    # --- layers: sparse connectivity --------------------------------------------------------------------------
    Case("Connectivity/all zero", lambda: Connectivity(np.zeros((3, 2))), "connectivity", r"\(3, 2\)"),
    Case("Connectivity/soft", lambda: Connectivity(np.full((3, 2), 0.5)), "connectivity", r"0\.5"),
    Case("Connectivity/NaN", lambda: Connectivity(np.array([[1, NAN]])), "connectivity", "NaN"),
    Case("Connectivity/rank 1", lambda: Connectivity(np.ones(3)), "connectivity", r"\(3,\)"),
    Case("Connectivity/names", lambda: Connectivity(np.ones((3, 2)), input_names=["a"]), "input_names", "'a'"),
    Case("SparseDense/effective_kernel unbuilt",
         unbuilt(SparseDense(2, np.ones((3, 2)), name="s1"), "effective_kernel"), "effective_kernel", "'s1'"),
    Case("SparseDense/fan_scaling", lambda: SparseDense(2, np.ones((3, 2)), fan_scaling="fan_avg"), "fan_scaling",
         "'fan_avg'"),
    Case("SparseDense/auto_storage", lambda: SparseDense(2, np.ones((3, 2)), auto_storage="csr"), "auto_storage",
         "'csr'"),
    Case("SparseDense/set_kernel shape", lambda: built_sparse().set_kernel(np.ones((2, 3))), "kernel",
         r"shape \(2, 3\)"),
    Case("SparseDense/set_kernel off the mask", lambda: built_sparse(np.eye(3, 2)).set_kernel(np.ones((3, 2))),
         "kernel", "non-zero entries off"),
    Case("connectivity_hierarchy/unknown child", lambda: connectivity_hierarchy(
        [[("a", "p")], [("q", "top")]], ["a"]), "memberships", "'q'"),
    Case("sparse_hierarchy_mlp/levels do not chain", lambda: models.sparse_hierarchy_mlp(
        [np.ones((4, 3)), np.ones((2, 2))]), "connectivities", r"\(2, 2\)"),
    Case("local_receptive_fields/patch 2.5", lambda: local_receptive_fields(8, 8, 4, 2.5, 0), "patch", "2.5"),
    Case("local_receptive_fields/patch 0", lambda: local_receptive_fields(8, 8, 4, 0, 0), "patch", "patch=0"),
    Case("local_receptive_fields/patch 9", lambda: local_receptive_fields(8, 8, 4, 9, 0), "patch", "patch=9"),
    Case("local_receptive_fields/seed None", lambda: local_receptive_fields(8, 8, 4, 3, None), "seed", "None"),
    Case("local_receptive_fields/seed -1", lambda: local_receptive_fields(8, 8, 4, 3, -1), "seed", "-1"),
    Case("local_receptive_fields/units 0", lambda: local_receptive_fields(8, 8, 0, 3, 0), "units", "units=0"),
    # --- ablation -------------------------------------------------------------------------------------------
    Case("predict_with_masks/masks None", lambda: ablation.predict_with_masks(MODEL, "hidden", X, None), "masks",
         "None"),
    Case("predict_with_masks/no masks", lambda: ablation.predict_with_masks(MODEL, "hidden", X, np.ones((0, 8))),
         "masks", r"\(0, 8\)"),
    Case("predict_with_masks/units", lambda: ablation.predict_with_masks(MODEL, "hidden", X, np.ones((2, 7))),
         "masks", r"\(2, 7\)"),
    Case("predict_with_masks/mask 2", lambda: ablation.predict_with_masks(MODEL, "hidden", X, 2 * ONES), "masks",
         "max=2"),
    Case("predict_with_masks/empty x", lambda: ablation.predict_with_masks(MODEL, "hidden", X[:0], ONES), "x",
         r"\(0, 6\)"),
    Case("predict_with_masks/NaN x", lambda: ablation.predict_with_masks(MODEL, "hidden", X_NAN, ONES), "x",
         "NaN"),
    Case("predict_with_masks/x None", lambda: ablation.predict_with_masks(MODEL, "hidden", None, ONES), "x",
         "None"),
    Case("predict_with_masks/batch_size 0",
         lambda: ablation.predict_with_masks(MODEL, "hidden", X, ONES, batch_size=0), "batch_size", "0"),
    Case("predict_with_masks/layer", lambda: ablation.predict_with_masks(MODEL, "nope", X, ONES), "layer", "'nope'"),
    Case("ablation_curve/fraction NaN", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [NAN]), "fractions",
         "nan"),
    Case("ablation_curve/fraction 1.5", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [1.5]), "fractions",
         r"1\.5"),
    Case("ablation_curve/no fractions", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, []), "fractions",
         r"\[\]"),
    Case("ablation_curve/fractions str", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, "0.5"),
         "fractions", "'0.5'"),
    Case("ablation_curve/strategy", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [0.5], ["best"]),
         "strategies", "best"),
    Case("ablation_curve/repeats 0", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [0.5], repeats=0),
         "repeats", "0"),
    Case("ablation_curve/repeats 2.5", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [0.5], repeats=2.5),
         "repeats", r"2\.5"),
    Case("ablation_curve/seed None", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [0.5], seed=None),
         "seed", "None"),
    Case("ablation_curve/lengths", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y[:5], [0.5]), "y",
         r"\(10\).*5 labels"),
    Case("ablation_curve/reference_x", lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [0.5],
                                                                      ["lowest_activation"]), "reference_x", "None"),
    Case("ablation_curve/NaN reference_x",
         lambda: ablation.ablation_curve(MODEL, "hidden", X, Y, [0.5], ["lowest_activation"], reference_x=X_NAN),
         "reference_x", "NaN"),
    Case("masks_from_scores/NaN", lambda: ablation.masks_from_scores([1.0, NAN], [0.5]), "scores", "not finite"),
    Case("masks_from_scores/fraction", lambda: ablation.masks_from_scores([1.0, 2.0], [1.5]), "fractions",
         r"1\.5"),
    Case("hidden_activations/NaN x", lambda: ablation.hidden_activations(MODEL, "hidden", X_NAN), "x", "NaN"),
    Case("split_model/layer object", lambda: ablation.split_model(MODEL, L.Dense(2, name="stranger")), "layer",
         "'stranger'"),
    Case("predict_with_masks/replacement str", lambda: ablation.predict_with_masks(MODEL, "hidden", X, ONES,
                                                                                 replacement="median"),
         "replacement", "'median'"),
    Case("predict_with_masks/replacement None", lambda: ablation.predict_with_masks(MODEL, "hidden", X, ONES,
                                                                                  replacement=None),
         "replacement", "None"),
    Case("predict_with_masks/replacement shape", lambda: ablation.predict_with_masks(MODEL, "hidden", X, ONES,
                                                                                   replacement=np.ones(3)),
         "replacement", r"\(3,\)"),
    Case("predict_with_masks/replacement NaN", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, replacement=np.full(8, NAN)), "replacement", "finite"),
    Case("predict_with_masks/mean without reference", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, replacement="mean"), "reference_x", "None"),
    Case("predict_with_masks/resample NaN reference", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, replacement="resample", reference_x=X_NAN), "reference_x", "NaN"),
    Case("predict_with_masks/resample seed None", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, replacement="resample", reference_x=X, seed=None), "seed", "None"),
    Case("predict_with_masks/resample seed -1", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, replacement="resample", reference_x=X, seed=-1), "seed", "-1"),
    Case("predict_with_masks/reduce", lambda: ablation.predict_with_masks(MODEL, "hidden", X, ONES, reduce="f1"),
         "reduce", "'f1'"),
    Case("predict_with_masks/reduce without y", lambda: ablation.predict_with_masks(MODEL, "hidden", X, ONES,
                                                                                  reduce="accuracy"), "y", "None"),
    Case("predict_with_masks/y out of range", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, reduce="accuracy", y=np.arange(10)), "y", r"\[3, 4"),
    Case("predict_with_masks/y float", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, reduce="accuracy", y=Y + 0.5), "y", "float"),
    Case("predict_with_masks/y one-hot", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, reduce="per_class_accuracy", y=np.eye(3)[Y]), "y", r"\(10, 3\)"),
    Case("predict_with_masks/y length", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, reduce="accuracy", y=Y[:4]), "y", "4 labels"),
    Case("predict_with_masks/layers list", lambda: ablation.predict_with_masks(MODEL, ["hidden"], X, ONES),
         "layers", r"\['hidden'\]"),
    Case("predict_with_masks/layers empty dict", lambda: ablation.predict_with_masks(MODEL, {}, X), "layers",
         "{}"),
    Case("predict_with_masks/dict masks None", lambda: ablation.predict_with_masks(MODEL, {"hidden": None}, X),
         "layers", "None"),
    Case("predict_with_masks/output layer single unit reduce", lambda: ablation.predict_with_masks(
        keras.Sequential([L.Input((6,)), L.Dense(4, name="h"), L.Dense(1)]), "h", X, np.ones((1, 4)),
        reduce="agreement"), "reduce", r"\(None, 1\)"),
    Case("predict_with_masks/jit_compile", lambda: ablation.predict_with_masks(MODEL, "hidden", X, ONES,
                                                                             jit_compile="yes"),
         "jit_compile", "'yes'"),
    Case("predict_with_masks/replacement extra layer", lambda: ablation.predict_with_masks(
        MODEL, "hidden", X, ONES, replacement={"hidden": "zero", "out": "zero"}), "replacement", "'out'"),
    Case("predict_with_masks/float token ids", lambda: ablation.predict_with_masks(
        TOKENS, "emb", np.full((2, 5), 1.5, np.float32), np.ones((1, 4))), "x", "non-integer"),
    Case("single_unit_ablation/y None", lambda: ablation.single_unit_ablation(MODEL, "hidden", X, None), "y", "None"),
    Case("single_unit_ablation/y NaN", lambda: ablation.single_unit_ablation(MODEL, "hidden", X, Y + NAN), "y",
         "float"),
    Case("single_unit_ablation/layer", lambda: ablation.single_unit_ablation(MODEL, "nope", X, Y), "layer",
         "'nope'"),
    Case("class_selectivity/one class", lambda: ablation.class_selectivity(MODEL, "hidden", X, np.zeros(10, int)),
         "y", r"\[0\]"),
    Case("class_selectivity/x empty", lambda: ablation.class_selectivity(MODEL, "hidden", X[:0], Y[:0]), "x",
         r"\(0, 6\)"),
    Case("class_selectivity/negative labels", lambda: ablation.class_selectivity(MODEL, "hidden", X, Y - 1), "y",
         r"-1"),
    Case("activations/batch_size", lambda: ablation.activations(MODEL, "hidden", X, batch_size=0), "batch_size",
         "0"),
    Case("ablation_curve/selectivity without labels", lambda: ablation.ablation_curve(
        MODEL, "hidden", X, Y, [0.5], ["highest_selectivity"], reference_x=X), "reference_y", "None"),
    Case("ablation_curve/layers empty", lambda: ablation.ablation_curve(MODEL, [], X, Y, [0.5]), "layers",
         r"\[\]"),
    Case("ablation_curve/layers repeated", lambda: ablation.ablation_curve(MODEL, ["hidden", "hidden"], X, Y,
                                                                           [0.5]), "layers", "'hidden'"),
    Case("unit_scores/seed None", lambda: ablation.unit_scores(MODEL, "hidden", "random", seed=None), "seed",
         "None"),
    # --- surgery --------------------------------------------------------------------------------------------
    Case("remove_units/units int", lambda: surgery.remove_units(MODEL, "hidden", 3), "units", "units=3"),
    Case("remove_units/units None", lambda: surgery.remove_units(MODEL, "hidden", None), "units", "None"),
    Case("remove_units/units str", lambda: surgery.remove_units(MODEL, "hidden", "3"), "units", "'3'"),
    Case("remove_units/units empty", lambda: surgery.remove_units(MODEL, "hidden", []), "units", r"\[\]"),
    Case("remove_units/units float", lambda: surgery.remove_units(MODEL, "hidden", [1.5]), "units", r"1\.5"),
    Case("remove_units/out of range", lambda: surgery.remove_units(MODEL, "hidden", [8]), "units", r"\[8\]"),
    Case("remove_units/negative", lambda: surgery.remove_units(MODEL, "hidden", [-1]), "units", r"\[-1\]"),
    Case("remove_units/duplicates", lambda: surgery.remove_units(MODEL, "hidden", [1, 1]), "units", r"\[1\]"),
    Case("remove_units/all", lambda: surgery.remove_units(MODEL, "hidden", list(range(8))), "units", "8"),
    Case("remove_units/layer", lambda: surgery.remove_units(MODEL, "nope", [0]), "layer", "'nope'"),
    Case("remove_units/layer int", lambda: surgery.remove_units(MODEL, 3, [0]), "layer", "layer=3"),
    Case("remove_units/exact", lambda: surgery.remove_units(MODEL, "hidden", [0], exact="no"), "exact", "'no'"),
    Case("remove_units/check", lambda: surgery.remove_units(MODEL, "hidden", [0], check=1), "check", "check=1"),
    Case("remove_units/output layer", lambda: surgery.remove_units(MODEL, "out", [0]), "out", "softmax"),
    Case("remove_heads/not attention", lambda: surgery.remove_heads(MODEL, "hidden", [0]), "layer", "Dense"),
    Case("remove_heads/all heads", lambda: surgery.remove_heads(ATTENTION, "mha", [0, 1]), "heads", "2"),
    Case("remove_heads/out of range", lambda: surgery.remove_heads(ATTENTION, "mha", [2]), "heads", r"\[2\]"),
    Case("prune/amount 0", lambda: surgery.prune(MODEL, 0.0), "amount", "0.0"),
    Case("prune/amount 1", lambda: surgery.prune(MODEL, 1.0), "amount", "1.0"),
    Case("prune/amount NaN", lambda: surgery.prune(MODEL, NAN), "amount", "nan"),
    Case("prune/amount True", lambda: surgery.prune(MODEL, True), "amount", "True"),
    Case("prune/amount str", lambda: surgery.prune(MODEL, "0.3"), "amount", "'0.3'"),
    Case("prune/criterion", lambda: surgery.prune(MODEL, 0.3, "magnitude"), "criterion", "'magnitude'"),
    Case("prune/scope", lambda: surgery.prune(MODEL, 0.3, scope="layer"), "scope", "'layer'"),
    Case("prune/x missing", lambda: surgery.prune(MODEL, 0.3, "apoz"), "x", "None"),
    Case("prune/seed", lambda: surgery.prune(MODEL, 0.3, "random", seed="0"), "seed", "'0'"),
    Case("prune/exact", lambda: surgery.prune(MODEL, 0.3, exact="no"), "exact", "'no'"),
    Case("prune/check_samples", lambda: surgery.prune(MODEL, 0.3, x=X, check_samples=0), "check_samples", "0"),
    Case("prune/batch_size", lambda: surgery.prune(MODEL, 0.3, x=X, batch_size=0), "batch_size", "0"),
    Case("prune/empty x", lambda: surgery.prune(MODEL, 0.3, "activation", x=X[:0]), "x", r"\[0\]"),
    Case("prune/x generator", lambda: surgery.prune(MODEL, 0.3, "activation", x=(r for r in X)), "x", "generator"),
    Case("prune/x dict", lambda: surgery.prune(MODEL, 0.3, "activation", x={"other": X}), "x", "other"),
    Case("units_by_weight_norm/n 0", lambda: surgery.units_by_weight_norm(MODEL, "hidden", 0), "n", "n=0"),
    Case("units_by_weight_norm/n all", lambda: surgery.units_by_weight_norm(MODEL, "hidden", 8), "n", "n=8"),
    Case("units_by_weight_norm/ord", lambda: surgery.units_by_weight_norm(MODEL, "hidden", 2, ord=3), "ord",
         "ord=3"),
    Case("verify_equivalence/batch_size", lambda: surgery.verify_equivalence(MODEL, MODEL, "hidden", [0], X,
                                                                            batch_size=0), "batch_size", "0"),
    Case("count_macs/unknown size", lambda: surgery.count_macs(keras.Sequential([L.Input((None, 3)),
                                                                                 L.Conv1D(2, 3, name="c")])),
         "count_macs", r"\(None, None, 2\)"),
    Case("register_channelwise/not a layer", lambda: surgery.register_channelwise(int), "register_channelwise",
         "int"),
    # --- training -------------------------------------------------------------------------------------------
    Case("train/monitor None", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, monitor=None), "monitor",
         "None"),
    Case("train/monitor train metric", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, monitor="loss"),
         "monitor", "'loss'"),
    Case("train/epochs 0", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=0), "epochs", "epochs=0"),
    Case("train/epochs 2.5", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=2.5), "epochs", r"2\.5"),
    Case("train/epochs True", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=True), "epochs", "True"),
    Case("train/batch_size 0", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, batch_size=0), "batch_size",
         "0"),
    Case("train/seed None", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, seed=None), "seed", "None"),
    Case("train/seed -1", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, seed=-1), "seed", "-1"),
    Case("train/learning_rate NaN", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, learning_rate=NAN),
         "learning_rate", "nan"),
    Case("train/learning_rate negative", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1,
                                                               learning_rate=-0.1), "learning_rate", "-0.1"),
    Case("train/learning_rate str", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, learning_rate="1e-3"),
         "learning_rate", "'1e-3'"),
    Case("train/lengths", lambda: training.train(BUILD, (X, Y[:5]), (X, Y), epochs=1), "train_data", "5 labels"),
    Case("train/NaN x", lambda: training.train(BUILD, (X_NAN, Y), (X, Y), epochs=1), "train_data", "NaN"),
    Case("train/float labels", lambda: training.train(BUILD, (X, Y + 0.5), (X, Y), epochs=1), "train_data",
         r"float64"),
    Case("train/label too large", lambda: training.train(BUILD, (X, Y + 1), (X, Y), epochs=1), "train_data",
         "max 3"),
    Case("train/one-hot labels", lambda: training.train(BUILD, (X, np.eye(3)[Y]), (X, Y), epochs=1), "train_data",
         r"\(10, 3\)"),
    Case("train/not a pair", lambda: training.train(BUILD, X, (X, Y), epochs=1), "train_data", "ndarray"),
    Case("train/empty val", lambda: training.train(BUILD, (X, Y), (X[:0], Y[:0]), epochs=1), "val_data",
         "0 labels"),
    Case("train/distribution str", lambda: training.train(BUILD, (X, Y), (X, Y), epochs=1, distribution="dp"),
         "distribution", "str"),
    Case("GlobalBatches/process_index", lambda: training.GlobalBatches(X, Y, 2, process_index=3, process_count=2),
         "process_index", "3"),
    Case("GlobalBatches/uneven batch", lambda: training.GlobalBatches(X, Y, 3, process_count=2), "batch_size",
         "received 10"),
    Case("initialize_processes/process_id", lambda: training.initialize_processes("127.0.0.1:1", 2, 2),
         "process_id", "2"),
    Case("initialize_processes/num_processes", lambda: training.initialize_processes("127.0.0.1:1", -1, 0),
         "num_processes", "-1"),
    Case("recalibrate_batchnorm/empty x", lambda: training.recalibrate_batchnorm(
        keras.Sequential([L.Input((6,)), L.BatchNormalization()]), X[:0]), "recalibrate_batchnorm", "0 samples"),
    Case("recalibrate_batchnorm/batch_size", lambda: training.recalibrate_batchnorm(
        keras.Sequential([L.Input((6,)), L.BatchNormalization()]), X, batch_size=0), "batch_size", "0"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_clear_error_naming_the_parameter_and_the_value(case):
    with pytest.raises((ValueError, TypeError)) as info:
        case.call()
    message = str(info.value)
    assert case.parameter in message, f"the message does not name {case.parameter!r}: {message}"
    assert re.search(case.received, message, re.S), f"the message does not show {case.received!r}: {message}"
    frame = info.traceback[-1]
    assert "/masklab/" in str(frame.path), f"raised outside masklab ({frame.path}): {message}"

"""Notebook 51's steps: paired differences by hand, the verdict, the metrics, and a routed method's test score
recomputed from its selected epoch by an independent path (full model, brute-force nearest centre)."""

import keras
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from masklab import data
from masklab.experiments import nsdropout as protocols
from masklab.experiments import nsdropout_variants as steps

FIT = dict(rate=0.2, curriculum_gamma=0.1, targeted_fraction=0.5, targeted_rate=0.4, cluster_refit_every=2,
           epochs=4, learning_rate=0.005, decay=5e-7, l2=5e-4, hidden_units=(16, 12), batch_size=None)


@pytest.fixture(scope="module")
def parts():
    splits = data.make_splits(data.load("mnist_5k"), seed=0, val_size=500, test_size=1000)
    return protocols.corrected_splits(splits, pool_size=300, mask_fraction=0.2, seed=0)


def scores_table(errors: dict) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "mode": mode, "seed": seed, "test_error": e}
                         for (m, mode), values in errors.items() for seed, e in enumerate(values)])


def test_paired_differences_by_hand():
    standard, other = [0.10, 0.12, 0.11, 0.13], [0.08, 0.11, 0.12, 0.10]
    summary = steps.paired_differences(scores_table({("standard dropout", "none"): standard,
                                                     ("curriculum dropout", "none"): other}))
    row = summary[summary["method"] == "curriculum dropout"].iloc[0]
    d = np.subtract(other, standard)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2  # sqrt(4) seeds
    assert row["difference_mean"] == pytest.approx(d.mean())
    assert (row["difference_low"], row["difference_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert row["error_std"] == pytest.approx(np.std(other, ddof=1))
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)  # scipy's own interval agrees
    assert (row["difference_low"], row["difference_high"]) == pytest.approx((ci.low, ci.high))


def test_verdict_names_only_variants_whose_interval_is_below_zero():
    worse = steps.paired_differences(scores_table({("standard dropout", "none"): [0.1, 0.1, 0.1],
                                                   ("NSDropout, k-means routing", "routed"): [0.5, 0.6, 0.55]}))
    assert steps.verdict(worse).startswith("No variant lowers the test error") and "1 of 1" in steps.verdict(worse)
    better = steps.paired_differences(scores_table({("standard dropout", "none"): [0.10, 0.11, 0.12],
                                                    ("targeted dropout", "none"): [0.08, 0.09, 0.10]}))
    assert steps.verdict(better) == ("Lower test error than standard dropout, 95 % interval below zero (3 seeds): "
                                     "targeted dropout (none): -2.00 points.")


def test_paired_differences_need_the_same_seeds():
    table = scores_table({("standard dropout", "none"): [0.1, 0.1], ("targeted dropout", "none"): [0.1, 0.1, 0.1]})
    with pytest.raises(ValueError, match="paired differences need the same seeds"):
        steps.paired_differences(table)


def test_methods_must_be_known_and_include_standard_dropout():
    with pytest.raises(ValueError, match="include 'standard dropout'"):
        steps.check_methods(["curriculum dropout"])
    with pytest.raises(ValueError, match="methods must be among"):
        steps.check_methods(["standard dropout", "NSDropout, oracle routing"])


def test_a_routed_score_is_the_selected_epoch_with_its_own_centres(parts):
    xy = {name: (protocols.inputs(s), s.y) for name, s in parts.items()}
    run = steps.train_method("mlp", "NSDropout, k-means routing", xy, num_classes=10, seed=0, fit=FIT)
    x_test, y_test = xy["test"]
    scored = run.score("routed", x_test, y_test)
    best = run.monitor.best["routed"]
    assert 1 <= scored["best_epoch"] <= FIT["epochs"] and scored["best_epoch"] == best["epoch"]
    # independent: the selected epoch's weights and centres, brute-force nearest centre, the full model
    model = run.model
    model.set_weights(best["weights"])
    head = keras.Model(model.inputs[0], model.get_layer("hidden_1").output)
    hidden = head.predict(x_test, verbose=0)
    centres = best["router_state"]
    routes = np.argmin(((hidden[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    predicted = model.predict([x_test, routes.astype(np.float32)], verbose=0).argmax(-1)
    assert scored["accuracy"]["routed"] == pytest.approx(np.mean(predicted == y_test))


def test_a_small_comparison_has_every_method_and_mode_and_a_few_metrics(parts, tmp_path):
    methods = ["standard dropout", "targeted dropout", "NSDropout, single class-free mask"]
    scores = steps.run_comparison("mlp", parts, num_classes=10, methods=methods, seeds=[0, 1], fit=FIT)
    expected = {(m, mode) for m in methods for mode in steps.method_modes(m)}
    assert set(zip(scores["method"], scores["mode"])) == expected and len(scores) == 2 * len(expected)
    assert scores["test_error"].between(0, 1).all() and scores["best_epoch"].between(1, FIT["epochs"]).all()
    presentation = {"original": {"nsdropout": {"test_accuracy": {"oracle": 1.0}}},
                    "corrected": {"nsdropout": {"none": {"mean": 0.3}, "predicted": {"mean": 0.4}},
                                  "standard_dropout": {"mean": 0.8}}}
    summary = steps.paired_differences(scores)
    metrics = steps.headline_metrics({"mlp": summary}, presentation)
    assert len(metrics) <= 8
    assert metrics["mlp_dropout"] == pytest.approx(scores.query("method == 'standard dropout'")["test_error"].mean())
    assert metrics["show_nsd_predicted"] == pytest.approx(0.6) and metrics["show_oracle"] == 0.0
    # the NSDropout row reported is the one with the best mean VAL accuracy, whatever its test error
    nsd = scores[scores["method"].str.startswith("NSDropout")].groupby("mode")
    by_val = nsd["val_accuracy"].mean().idxmax()
    assert metrics["mlp_nsd"] == pytest.approx(nsd["test_error"].mean()[by_val])
    routed = scores[scores["method"] == "NSDropout, single class-free mask"]
    assert routed["epochs_with_absent_routes"].between(0, FIT["epochs"]).all()
    assert scores.loc[scores["method"] == "standard dropout", "epochs_with_absent_routes"].isna().all()


@pytest.mark.parametrize("seeds", [[], [0, 0, 1], [0, -1], [0.5], None])
def test_seeds_must_be_distinct_non_negative_integers(parts, seeds):
    with pytest.raises(ValueError, match="seeds must be a non-empty list of distinct non-negative integers"):
        steps.run_comparison("mlp", parts, num_classes=10, methods=["standard dropout"], seeds=seeds, fit=FIT)


def test_repeated_scores_are_refused():
    table = scores_table({("standard dropout", "none"): [0.1, 0.1]})
    with pytest.raises(ValueError, match="one score per seed"):
        steps.paired_differences(pd.concat([table, table]))

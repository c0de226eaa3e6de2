"""The multi-level pathway experiment (notebook 30): the synthetic hierarchy, its shuffled control, and the
level-by-level knock-out checked against a hand-zeroed copy of the network."""

import keras
import numpy as np
import pytest

from masklab import models
from masklab.experiments import hierarchy

SMALL = dict(n_genes=300, level_sizes=[12, 4, 2], density=0.05, loading=1.0, label_noise=0.3, n_train=200,
             n_val=60, n_test=120)


@pytest.fixture(scope="module")
def problem():
    return hierarchy.hierarchy_problem(**SMALL, seed=0)


def test_the_hierarchy_is_a_tree_and_the_causal_path_follows_it(problem):
    levels = problem.levels
    assert [c.units for c in levels] == [12, 4, 2]
    for below, above in zip(levels, levels[1:]):
        assert below.unit_names == above.input_names
        assert (above.matrix.sum(axis=1) == 1).all()  # one parent per unit
        assert above.matrix.any(axis=0).all()        # every parent has a child
    for k in range(1, len(levels)):
        assert levels[k].matrix[problem.causal_path[k - 1], problem.causal_path[k]]
    assert problem.train[0].shape == (200, 300) and set(np.unique(problem.train[1])) == {0, 1}
    again = hierarchy.hierarchy_problem(**SMALL, seed=0)
    np.testing.assert_array_equal(again.train[0], problem.train[0])


def test_the_shuffled_control_keeps_the_sizes_and_breaks_the_memberships(problem):
    control = hierarchy.shuffled_hierarchy(problem.levels, seed=0)
    for true, shuffled in zip(problem.levels, control):
        np.testing.assert_array_equal(true.matrix.sum(axis=0), shuffled.matrix.sum(axis=0))
        assert true.unit_names == shuffled.unit_names
    assert not np.array_equal(control[0].matrix, problem.levels[0].matrix)


def test_knockout_equals_a_hand_zeroed_copy(problem):
    """Switching off unit j of level k == zeroing row j of the next layer's kernel (tanh(0) contributes 0)."""
    keras.utils.set_random_seed(0)
    model = models.sparse_hierarchy_mlp(problem.levels, 2, activation="tanh")
    knockout = hierarchy.level_knockout(model, problem, problem.levels)
    x, y = problem.test

    def loss(m):
        p = m.predict(x, verbose=0)
        return -np.log(p[np.arange(len(y)), y]).mean()

    base = loss(model)
    for k, unit in ((1, 3), (2, 1), (3, 0)):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        nxt = clone.get_layer(f"level_{k + 1}" if k < 3 else "output")
        if k < 3:
            kernel = np.asarray(nxt.kernel).copy()
            kernel[unit] = 0.0
            nxt.set_kernel(kernel)
        else:
            kernel, bias = nxt.get_weights()
            kernel[unit] = 0.0
            nxt.set_weights([kernel, bias])
        row = knockout[(knockout.level == k) & (knockout.unit == unit)].iloc[0]
        assert row.loss_increase == pytest.approx(loss(clone) - base, abs=1e-5)
    assert len(knockout) == 12 + 4 + 2 and knockout.groupby("level").causal.sum().tolist() == [1, 1, 1]


def test_summary_by_hand():
    import pandas as pd

    levels = hierarchy.hierarchy_problem(**SMALL, seed=1).levels
    causal = [2, int(np.flatnonzero(levels[1].matrix[2])[0])]
    rows = []
    for k, n in ((1, 12), (2, 4)):
        for unit in range(n):
            rows.append({"level": k, "unit": unit, "causal": unit == causal[k - 1],
                         "loss_increase": 1.0 if unit == causal[k - 1] else 0.1 * unit / n})
    summary = hierarchy.knockout_summary(pd.DataFrame(rows), levels[:2])
    assert summary["causal_is_first"].all() and summary["top_is_parent_of_top_below"].all()
    assert summary["causal_rank"].tolist() == [1, 1]

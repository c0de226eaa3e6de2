"""Connectivity from arrays, scipy.sparse, files and membership tables, checked against the matrix written."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from masklab.layers import Connectivity, SparseDense, as_connectivity, connectivity_from_pairs, connectivity_hierarchy, \
    local_receptive_fields


@pytest.fixture
def matrix():
    m = np.random.default_rng(0).random((12, 5)) < 0.3
    m[0] = True
    return m


@pytest.mark.parametrize("convert", [scipy.sparse.csr_matrix, scipy.sparse.coo_matrix, scipy.sparse.csc_array,
                                     lambda m: m.astype(np.int8), lambda m: m.astype(np.float64).tolist()])
def test_in_memory_forms(matrix, convert):
    np.testing.assert_array_equal(as_connectivity(convert(matrix)).matrix, matrix)


def test_scipy_bad_values_are_refused(matrix):
    bad = scipy.sparse.csr_matrix(matrix.astype(float) * 3)
    with pytest.raises(ValueError, match=r"0 or 1.*Received: \[3.0\]"):
        as_connectivity(bad)


def test_files(tmp_path, matrix):
    np.save(tmp_path / "c.npy", matrix.astype(np.uint8))
    np.savez(tmp_path / "one.npz", matrix)
    np.savez(tmp_path / "named.npz", other=np.zeros(3), connectivity=matrix)
    scipy.sparse.save_npz(tmp_path / "sparse.npz", scipy.sparse.csr_matrix(matrix.astype(np.float32)))
    np.savetxt(tmp_path / "plain.csv", matrix.astype(int), fmt="%d", delimiter=",")
    for name in ("c.npy", "one.npz", "named.npz", "sparse.npz", "plain.csv"):
        loaded = as_connectivity(tmp_path / name)
        np.testing.assert_array_equal(loaded.matrix, matrix, err_msg=name)
    assert SparseDense(5, str(tmp_path / "sparse.npz")).connectivity.nnz == matrix.sum()


def test_csv_with_names(tmp_path, matrix):
    table = pd.DataFrame(matrix.astype(int), index=[f"gene{i}" for i in range(12)],
                         columns=[f"pathway{j}" for j in range(5)])
    table.to_csv(tmp_path / "named.csv")
    loaded = as_connectivity(tmp_path / "named.csv")
    np.testing.assert_array_equal(loaded.matrix, matrix)
    assert loaded.input_names == tuple(table.index) and loaded.unit_names == tuple(table.columns)


def test_file_errors(tmp_path, matrix):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        as_connectivity(tmp_path / "missing.npy")
    (tmp_path / "c.txt").write_text("1,0\n")
    with pytest.raises(ValueError, match=r"\.npy, \.npz or \.csv. Received: .*c.txt"):
        as_connectivity(tmp_path / "c.txt")
    np.savez(tmp_path / "two.npz", a=matrix, b=matrix)
    with pytest.raises(ValueError, match=r"Received arrays: \['a', 'b'\]"):
        as_connectivity(tmp_path / "two.npz")
    (tmp_path / "bad.csv").write_text("1,0\n0,x\n")
    with pytest.raises(ValueError, match=r"not numbers at \(row, column\) \[\[1, 1\]\]"):
        as_connectivity(tmp_path / "bad.csv")


def test_pairs_keep_names_and_match_a_loop_by_hand():
    inputs = ["TP53", "BRCA1", "EGFR", "MYC"]
    units = ["apoptosis", "dna_repair", "growth"]
    pairs = pd.DataFrame({"gene": ["TP53", "BRCA1", "TP53", "EGFR", "MYC", "EGFR"],
                          "pathway": ["apoptosis", "dna_repair", "dna_repair", "growth", "growth", "growth"]})
    c = connectivity_from_pairs(pairs, inputs, units)
    expected = np.zeros((4, 3), bool)
    for gene, pathway in pairs.itertuples(index=False):
        expected[inputs.index(gene), units.index(pathway)] = True
    np.testing.assert_array_equal(c.matrix, expected)
    assert c.input_names == tuple(inputs) and c.unit_names == tuple(units)
    assert c.nnz == 5  # the repeated (EGFR, growth) row counts once
    with pytest.raises(ValueError, match=r"unknown inputs \['KRAS'\].*unknown units \['wnt'\]"):
        connectivity_from_pairs([("KRAS", "growth"), ("MYC", "wnt")], inputs, units)
    with pytest.raises(ValueError, match=r"duplicates: \['MYC'\]"):
        connectivity_from_pairs([("MYC", "growth")], inputs + ["MYC"], units)


def test_config_round_trip_keeps_bits_and_names(matrix):
    c = as_connectivity(matrix)
    named = Connectivity(matrix, tuple("abcdefghijkl"), tuple("vwxyz"))
    for original in (c, named):
        restored = Connectivity.from_config(original.to_config())
        np.testing.assert_array_equal(restored.matrix, original.matrix)
        assert restored.input_names == original.input_names and restored.unit_names == original.unit_names


def test_local_receptive_fields_are_square_patches():
    c = local_receptive_fields(10, 12, units=40, patch=4, seed=0)
    assert c.shape == (120, 40)
    for j in range(c.units):
        window = c.matrix[:, j].reshape(10, 12)
        rows, cols = np.nonzero(window)
        assert window.sum() == 16 and rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
    np.testing.assert_array_equal(c.matrix, local_receptive_fields(10, 12, 40, 4, seed=0).matrix)
    rgb = local_receptive_fields(8, 8, units=3, patch=2, seed=1, channels=3)
    assert rgb.shape == (192, 3) and (rgb.matrix.sum(axis=0) == 12).all()
    with pytest.raises(ValueError, match=r"patch=13"):
        local_receptive_fields(10, 12, 5, patch=13, seed=0)


# --- multi-level hierarchies -------------------------------------------------------------------------------------
GENES = ["g0", "g1", "g2", "g3", "g4", "g5"]
GENE_TO_PATHWAY = [("g0", "p_b"), ("g1", "p_b"), ("g2", "p_a"), ("g3", "p_a"), ("g3", "p_c"), ("g4", "p_c")]
PATHWAY_TO_PARENT = pd.DataFrame({"child": ["p_a", "p_b", "p_c"], "parent": ["top_2", "top_1", "top_1"]})


def test_hierarchy_levels_chain_and_match_the_tables_by_hand():
    genes_to_pathways, pathways_to_parents = connectivity_hierarchy([GENE_TO_PATHWAY, PATHWAY_TO_PARENT], GENES)
    assert genes_to_pathways.input_names == tuple(GENES)
    assert genes_to_pathways.unit_names == ("p_a", "p_b", "p_c")  # sorted by default
    assert pathways_to_parents.input_names == ("p_a", "p_b", "p_c")
    assert pathways_to_parents.unit_names == ("top_1", "top_2")
    expected = np.zeros((6, 3), bool)
    for gene, pathway in GENE_TO_PATHWAY:
        expected[GENES.index(gene), ["p_a", "p_b", "p_c"].index(pathway)] = True
    np.testing.assert_array_equal(genes_to_pathways.matrix, expected)  # g5 is in no pathway: an all-zero row
    np.testing.assert_array_equal(pathways_to_parents.matrix, [[0, 1], [1, 0], [1, 0]])


def test_hierarchy_keeps_a_given_unit_order():
    levels = [["p_c", "p_b", "p_a"], ["top_2", "top_1"]]
    first, second = connectivity_hierarchy([GENE_TO_PATHWAY, PATHWAY_TO_PARENT], GENES, levels=levels)
    assert first.unit_names == ("p_c", "p_b", "p_a") and second.input_names == ("p_c", "p_b", "p_a")
    np.testing.assert_array_equal(second.matrix, [[0, 1], [0, 1], [1, 0]])


def test_hierarchy_model_matches_numpy_level_by_level():
    from masklab import models

    connectivities = connectivity_hierarchy([GENE_TO_PATHWAY, PATHWAY_TO_PARENT], GENES)
    model = models.sparse_hierarchy_mlp(connectivities, 2)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    h = x
    for k, connectivity in enumerate(connectivities, start=1):
        layer = model.get_layer(f"level_{k}")
        h = np.tanh(h @ (np.asarray(layer.kernel) * connectivity.matrix) + np.asarray(layer.bias))
    head = model.get_layer("output")
    logits = h @ np.asarray(head.kernel) + np.asarray(head.bias)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_hierarchy_warns_about_dead_ends_by_name():
    with pytest.warns(UserWarning, match=r"1 units of level 0 have no parent at level 1 \(first: \['p_c'\]\)"):
        connectivity_hierarchy([GENE_TO_PATHWAY, [("p_a", "top"), ("p_b", "top")]], GENES)


@pytest.mark.parametrize("memberships, levels, message", [
    (GENE_TO_PATHWAY, None, r"list of tables, one per level; received a single table"),
    ([], None, r"non-empty list"),
    (PATHWAY_TO_PARENT, None, r"non-empty list with one \(child, parent\) table per level. Received: DataFrame"),
    ([GENE_TO_PATHWAY, [("p_a", "top"), ("p_x", "top")]], None,
     r"memberships\[1\]: children must be level 0's units.*unknown inputs \['p_x'\]"),
    ([[("g9", "p_a")]], None, r"memberships\[0\]: children must be inputs.*unknown inputs \['g9'\]"),
    ([GENE_TO_PATHWAY, PATHWAY_TO_PARENT], [["p_a", "p_b", "p_c"]], r"one list of unit names per membership"),
    ([[("g0", "p_a", "extra")]], None, r"memberships\[0\] must be a non-empty table.*shape \(1, 3\)"),
])
def test_hierarchy_bad_input(memberships, levels, message):
    with pytest.raises(ValueError, match=message):
        connectivity_hierarchy(memberships, GENES, levels=levels)


def test_hierarchy_model_refuses_levels_that_do_not_chain():
    from masklab import models

    with pytest.raises(ValueError, match=r"connectivities\[0\] has 3 units but connectivities\[1\] expects 4"):
        models.sparse_hierarchy_mlp([np.ones((6, 3)), np.ones((4, 2))])

"""Fixed connectivity matrices for ``SparseDense`` (seed 003): which input feeds which unit.

A connectivity is an ``(input_dim, units)`` 0/1 matrix: entry ``[i, j] == 1`` connects input ``i`` to unit ``j``.
``as_connectivity`` reads it from a NumPy array, a scipy.sparse matrix, or a ``.npy`` / ``.npz`` / ``.csv`` file;
``connectivity_from_pairs`` builds it from a membership table of ``(input_name, unit_name)`` rows (gene ->
pathway), keeping the names. ``local_receptive_fields`` gives the image variant (each unit sees one k x k patch).
"""

from __future__ import annotations

import base64
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class Connectivity:
    """A validated ``(input_dim, units)`` boolean connectivity matrix, with optional input and unit names."""

    matrix: np.ndarray
    input_names: tuple[str, ...] | None = None
    unit_names: tuple[str, ...] | None = None
    source: str = field(default="array", compare=False)

    def __post_init__(self):
        """Validate whatever was given (also through the public constructor): a 2-D matrix of 0/1 (or bool)
        with at least one connection, names matching its rows and columns. Stored as a contiguous bool array."""
        matrix, source = np.asarray(self.matrix), self.source
        if matrix.ndim != 2:
            raise ValueError(f"connectivity must be a 2-D (input_dim, units) 0/1 matrix. Received: shape "
                             f"{matrix.shape} from {source}")
        if 0 in matrix.shape:
            raise ValueError(f"connectivity must have at least one input and one unit. Received: shape "
                             f"{matrix.shape}")
        if matrix.dtype != bool:
            if not np.issubdtype(matrix.dtype, np.number):
                raise ValueError(f"connectivity entries must be 0 or 1. Received: dtype {matrix.dtype} from {source}")
            _check_zero_one(matrix.ravel(), lambda where: np.argwhere(where.reshape(matrix.shape)), source)
            matrix = matrix == 1
        if not matrix.any():
            raise ValueError(f"connectivity has no connection at all (all {matrix.shape} entries are 0; from "
                             f"{source})")
        names = {}
        for what, given, size in (("input_names", self.input_names, matrix.shape[0]),
                                  ("unit_names", self.unit_names, matrix.shape[1])):
            if given is not None and (isinstance(given, (str, bytes)) or len(given) != size):
                raise ValueError(f"{what} must hold one name per {'row' if what == 'input_names' else 'column'} "
                                 f"({size}). Received: {given!r:.80}")
            names[what] = None if given is None else tuple(str(n) for n in given)
        object.__setattr__(self, "matrix", np.ascontiguousarray(matrix))
        object.__setattr__(self, "input_names", names["input_names"])
        object.__setattr__(self, "unit_names", names["unit_names"])

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def input_dim(self) -> int:
        return self.matrix.shape[0]

    @property
    def units(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.matrix))

    @property
    def density(self) -> float:
        return self.nnz / self.matrix.size

    @property
    def units_without_inputs(self) -> np.ndarray:
        """Indices of units no input connects to (they can only output ``activation(bias)``)."""
        return np.flatnonzero(~self.matrix.any(axis=0))

    @property
    def indices(self) -> np.ndarray:
        """``(nnz, 2)`` int32 ``(input, unit)`` pairs of the connections, in row-major order."""
        return np.argwhere(self.matrix).astype(np.int32)

    def to_config(self) -> dict:
        """JSON-safe form: the shape and the bits packed row-major, base64 encoded (a 9180 x 230 matrix takes
        about 350 kB whatever its density), plus the names if any."""
        return {"shape": list(self.shape),
                "packed_bits": base64.b64encode(np.packbits(self.matrix.ravel())).decode("ascii"),
                "input_names": None if self.input_names is None else list(self.input_names),
                "unit_names": None if self.unit_names is None else list(self.unit_names)}

    @classmethod
    def from_config(cls, config: dict) -> "Connectivity":
        shape = tuple(config["shape"])
        bits = np.unpackbits(np.frombuffer(base64.b64decode(config["packed_bits"]), dtype=np.uint8))
        matrix = bits[: shape[0] * shape[1]].reshape(shape).astype(bool)
        return _validated(matrix, config.get("input_names"), config.get("unit_names"), "config")


def _validated(matrix, input_names=None, unit_names=None, source="array") -> Connectivity:
    return Connectivity(matrix, input_names, unit_names, source)


def _check_zero_one(values: np.ndarray, locate, source: str) -> None:
    """Refuse NaN and anything but 0/1 among ``values``; ``locate(bool_mask)`` gives the (input, unit) pairs of
    the flagged values (computed only when there is something to report)."""
    if np.issubdtype(values.dtype, np.floating) and np.isnan(values).any():
        raise ValueError(f"connectivity contains NaN at (input, unit) {locate(np.isnan(values))[:5].tolist()} "
                         f"(from {source})")
    bad = (values != 0) & (values != 1)
    if bad.any():
        raise ValueError(f"connectivity entries must be 0 or 1. Received: {np.unique(values[bad])[:10].tolist()} "
                         f"at (input, unit) {locate(bad)[:5].tolist()} (from {source})")


def _is_scipy_sparse(value) -> bool:
    try:
        import scipy.sparse
    except ImportError:  # scipy is a dependency of scikit-learn, but the layer itself does not need it
        return False
    return scipy.sparse.issparse(value)


def _from_sparse(matrix, source: str) -> Connectivity:
    coo = matrix.tocoo()
    data = np.asarray(coo.data)
    _check_zero_one(data, lambda where: np.stack([coo.row[where], coo.col[where]], axis=1), source)
    dense = np.zeros(coo.shape, dtype=bool)
    dense[coo.row, coo.col] = data == 1  # duplicate entries would have been summed by tocoo(): checked above
    return _validated(dense, source=source)


def _read_csv(path: Path) -> Connectivity:
    """A CSV of 0/1, optionally with a header row of unit names and a first column of input names."""
    import pandas as pd

    table = pd.read_csv(path, header=None, dtype=str, skipinitialspace=True)

    def numeric(values) -> bool:
        return bool(pd.to_numeric(pd.Series(values), errors="coerce").notna().all())

    has_header = not numeric(table.iloc[0, 1:]) if table.shape[1] > 1 else not numeric(table.iloc[0])
    has_index = not numeric(table.iloc[1 if has_header else 0:, 0])
    unit_names = list(table.iloc[0, 1 if has_index else 0:]) if has_header else None
    body = table.iloc[1 if has_header else 0:, 1 if has_index else 0:]
    input_names = list(table.iloc[1 if has_header else 0:, 0]) if has_index else None
    values = body.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if np.isnan(values).any() and not body.isin(["nan", "NaN"]).to_numpy().any():
        where = np.argwhere(np.isnan(values))[:5].tolist()
        raise ValueError(f"{path}: entries that are not numbers at (row, column) {where} of the matrix body")
    return _validated(values, input_names, unit_names, str(path))


def _read_file(path: Path) -> Connectivity:
    if not path.exists():
        raise FileNotFoundError(f"connectivity file not found. Received: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _validated(np.load(path, allow_pickle=False), source=str(path))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if {"format", "shape", "data"} <= keys:  # written by scipy.sparse.save_npz
                import scipy.sparse
                return _from_sparse(scipy.sparse.load_npz(path), str(path))
            if "connectivity" in keys:
                return _validated(archive["connectivity"], source=f"{path}['connectivity']")
            if len(keys) == 1:
                return _validated(archive[next(iter(keys))], source=str(path))
        raise ValueError(f"{path}: an .npz must be a scipy.sparse.save_npz file, hold one array, or hold an array "
                         f"named 'connectivity'. Received arrays: {sorted(keys)}")
    if suffix == ".csv":
        return _read_csv(path)
    raise ValueError(f"connectivity files must be .npy, .npz or .csv. Received: {path}")


def as_connectivity(value) -> Connectivity:
    """A ``Connectivity`` from a Connectivity, an array-like, a scipy.sparse matrix, a path (.npy/.npz/.csv) or a
    ``Connectivity.to_config()`` dict. Raises ValueError naming what was received for anything that is not a
    non-empty 0/1 matrix (NaN, other values, all zeros, wrong rank)."""
    if isinstance(value, Connectivity):
        return value
    if isinstance(value, dict):
        return Connectivity.from_config(value)
    if isinstance(value, (str, os.PathLike)):
        return _read_file(Path(value))
    if _is_scipy_sparse(value):
        return _from_sparse(value, type(value).__name__)
    if value is None:
        raise ValueError("connectivity is required: an (input_dim, units) 0/1 matrix. Received: None")
    return _validated(np.asarray(value), source=type(value).__name__)


def connectivity_from_pairs(pairs, inputs, units) -> Connectivity:
    """Build a connectivity from a membership table of ``(input_name, unit_name)`` rows (e.g. gene -> pathway).

    Args:
        pairs: iterable of 2-tuples, or a DataFrame / array with two columns (input name, unit name).
        inputs: the input names in the order of the model's input features (the rows).
        units: the unit names in the order of the layer's units (the columns).

    A name in ``pairs`` that is not in ``inputs`` / ``units`` is an error (listed); repeated rows count once.
    """
    rows = np.asarray(pairs.to_numpy() if hasattr(pairs, "to_numpy") else list(pairs), dtype=object)
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise ValueError(f"pairs must be (input_name, unit_name) rows. Received: shape {rows.shape}")
    inputs, units = [list(map(str, names)) for names in (inputs, units)]
    for names, what in ((inputs, "inputs"), (units, "units")):
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{what} names must be unique. Received duplicates: {duplicated[:10]}")
    input_index = {name: i for i, name in enumerate(inputs)}
    unit_index = {name: j for j, name in enumerate(units)}
    row_names, unit_names = [str(n) for n in rows[:, 0]], [str(n) for n in rows[:, 1]]
    unknown_inputs = sorted(set(row_names) - input_index.keys())
    unknown_units = sorted(set(unit_names) - unit_index.keys())
    if unknown_inputs or unknown_units:
        raise ValueError(f"pairs name inputs or units that are not listed. Received unknown inputs "
                         f"{unknown_inputs[:10]} ({len(unknown_inputs)}), unknown units {unknown_units[:10]} "
                         f"({len(unknown_units)})")
    matrix = np.zeros((len(inputs), len(units)), dtype=bool)
    matrix[[input_index[n] for n in row_names], [unit_index[n] for n in unit_names]] = True
    return _validated(matrix, inputs, units, "pairs")


def local_receptive_fields(height: int, width: int, units: int, patch: int, seed: int,
                           channels: int = 1) -> Connectivity:
    """Image connectivity: each of ``units`` hidden units sees one ``patch x patch`` window (all channels) of a
    ``(height, width, channels)`` image flattened row-major; window positions are drawn uniformly from ``seed``."""
    for name, value in (("height", height), ("width", width), ("units", units), ("patch", patch),
                        ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (the wiring must be reproducible). Received: "
                         f"seed={seed!r}")
    if not 1 <= patch <= min(height, width):
        raise ValueError(f"patch must be between 1 and min(height, width)={min(height, width)}. Received: "
                         f"patch={patch}")
    rng = np.random.default_rng(seed)
    top = rng.integers(0, height - patch + 1, size=units)
    left = rng.integers(0, width - patch + 1, size=units)
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    inside = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + patch) &
              (cols >= left[:, None, None]) & (cols < left[:, None, None] + patch))  # (units, height, width)
    matrix = np.repeat(inside[..., None], channels, axis=-1).reshape(units, -1).T
    return _validated(matrix, source=f"local_receptive_fields(patch={patch})")


def connectivity_hierarchy(memberships, inputs, levels=None) -> list[Connectivity]:
    """One connectivity per level of a child -> parent hierarchy: genes -> pathways -> parent pathways -> ...
    (P-NET, BINN, KPNN). Stack one ``SparseDense`` per returned connectivity (``models.sparse_hierarchy_mlp``).

    Args:
        memberships: a list with one membership table per level, each of ``(child_name, parent_name)`` rows as
            ``connectivity_from_pairs`` takes them (2-tuples, a two-column DataFrame or array). Level 0's
            children are the model's inputs; level ``k``'s children are level ``k - 1``'s parents.
        inputs: the input names in the order of the model's features (level 0's rows).
        levels: optional list with the unit names of each level, in the order the layer's units should have;
            default: each level's parent names sorted.

    Returns ``[Connectivity(inputs x level 0), Connectivity(level 0 x level 1), ...]`` with names; level ``k``'s
    ``unit_names`` are level ``k + 1``'s ``input_names``. A child at level ``k`` that is not a unit of level
    ``k - 1`` (or not an input) is an error; a unit that has no parent at the next level is a dead end (nothing
    it computes reaches the top) and is warned about by name.
    """
    if hasattr(memberships, "to_numpy") or not isinstance(memberships, (list, tuple)) or not memberships:
        raise ValueError(f"memberships must be a non-empty list with one (child, parent) table per level. "
                         f"Received: {type(memberships).__name__}")
    first = memberships[0]
    if isinstance(first, (tuple, list)) and len(first) == 2 and all(isinstance(n, str) for n in first):
        raise ValueError(f"memberships must be a list of tables, one per level; received a single table of "
                         f"(child, parent) pairs (first row {tuple(first)}): wrap it in a list")
    if levels is not None and len(levels) != len(memberships):
        raise ValueError(f"levels must give one list of unit names per membership table ({len(memberships)}). "
                         f"Received: {len(levels)} lists")
    connectivities, children = [], [str(n) for n in inputs]
    for level, table in enumerate(memberships):
        rows = np.asarray(table.to_numpy() if hasattr(table, "to_numpy") else list(table), dtype=object)
        if rows.ndim != 2 or rows.shape[1] != 2 or not len(rows):
            raise ValueError(f"memberships[{level}] must be a non-empty table of (child_name, parent_name) rows. "
                             f"Received: shape {rows.shape}")
        parents = ([str(n) for n in levels[level]] if levels is not None
                   else sorted({str(n) for n in rows[:, 1]}))
        try:
            connectivity = connectivity_from_pairs(rows, children, parents)
        except ValueError as error:
            what = "inputs" if level == 0 else f"level {level - 1}'s units (memberships[{level - 1}]'s parents)"
            raise ValueError(f"memberships[{level}]: children must be {what}. {error}") from None
        connectivities.append(connectivity)
        children = parents
    for level, (connectivity, above) in enumerate(zip(connectivities, connectivities[1:])):
        dead = np.flatnonzero(~above.matrix.any(axis=1))
        if dead.size:
            names = [connectivity.unit_names[j] for j in dead[:10]]
            warnings.warn(f"connectivity_hierarchy: {dead.size} units of level {level} have no parent at level "
                          f"{level + 1} (first: {names}); nothing they compute reaches the output.", stacklevel=2)
    return connectivities

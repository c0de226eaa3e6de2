"""Result files that a rerun writes byte for byte: JSON, CSV and saved models."""

import hashlib
import json
import zipfile

import keras
import numpy as np

from masklab import records


def test_the_same_model_saved_twice_gives_the_same_bytes_and_loads_back(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    first, second = records.save_model(model, tmp_path / "a.keras"), records.save_model(model, tmp_path / "b.keras")
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    assert digest(first) == digest(second)
    with zipfile.ZipFile(first) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
    loaded = keras.models.load_model(first)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_json_and_csv_are_written_the_same_way_every_time(tmp_path):
    import pandas as pd

    data = {"b": np.float32(0.5), "a": [np.int64(1), float("nan")]}
    table = pd.DataFrame({"x": [1.0 / 3, 2.0], "y": ["p", "q"]})
    assert records.write_json(data, tmp_path / "1.json").read_bytes() == \
        records.write_json(data, tmp_path / "2.json").read_bytes() == b'{\n  "a": [\n    1,\n    null\n  ],\n  "b": 0.5\n}\n'
    assert records.write_csv(table, tmp_path / "t.csv").read_text() == "x,y\n0.33333333,p\n2,q\n"

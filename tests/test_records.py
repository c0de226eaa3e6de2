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


def test_models_with_shared_layers_save_without_memory_addresses(tmp_path):
    """Keras writes ``id()`` of shared objects into config.json; two separately built equal models must still give
    the same bytes, and the loaded model must still share its layer."""

    def build():
        keras.utils.set_random_seed(0)
        shared = keras.layers.Dense(3, name="shared")
        a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
        return keras.Model([a, b], keras.layers.Add(name="sum")([shared(a), shared(b)]), name="siamese")

    first, second = build(), build()
    path_1, path_2 = records.save_model(first, tmp_path / "1.keras"), records.save_model(second, tmp_path / "2.keras")
    assert path_1.read_bytes() == path_2.read_bytes()
    with zipfile.ZipFile(path_1) as archive:
        config = archive.read("config.json").decode()
    assert '"shared_object_id": 1' in config and str(id(first.get_layer("shared"))) not in config
    loaded = keras.models.load_model(path_1)
    assert len([layer for layer in loaded.layers if isinstance(layer, keras.layers.Dense)]) == 1
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(loaded.predict([x, 2 * x], verbose=0), first.predict([x, 2 * x], verbose=0), rtol=1e-6)


def test_keras_step_timings_are_blanked_and_other_numbers_kept():
    text = "28/28 - 1s - 33ms/step - accuracy: 0.9123 - loss: 0.25\nEpoch 2/5 took 12.5s total\n"
    cleaned = records._STEP_TIMES.sub("<time>", text)
    assert cleaned == "28/28 - <time> - <time> - accuracy: 0.9123 - loss: 0.25\nEpoch 2/5 took <time> total\n"
    assert records._STEP_TIMES.sub("<time>", "layer_2s x3s") == "layer_2s x3s"


def test_json_and_csv_are_written_the_same_way_every_time(tmp_path):
    import pandas as pd

    data = {"b": np.float32(0.5), "a": [np.int64(1), float("nan")]}
    table = pd.DataFrame({"x": [1.0 / 3, 2.0], "y": ["p", "q"]})
    assert records.write_json(data, tmp_path / "1.json").read_bytes() == \
        records.write_json(data, tmp_path / "2.json").read_bytes() == b'{\n  "a": [\n    1,\n    null\n  ],\n  "b": 0.5\n}\n'
    assert records.write_csv(table, tmp_path / "t.csv").read_text() == "x,y\n0.33333333,p\n2,q\n"


def test_normalized_notebook_names_no_checkout_path(tmp_path):
    """The same notebook executed in two checkouts (different folders) normalizes to the same bytes."""
    import json

    normalized = []
    for checkout in ("a/clone", "b/other place"):
        root = tmp_path / checkout
        notebook = {"cells": [], "metadata": {"papermill": {
            "input_path": "notebooks/10-baseline.py", "output_path": f"{root}/results/executed/x.ipynb",
            "start_time": "2026-01-01", "duration": 1.5}}, "nbformat": 4, "nbformat_minor": 5}
        path = root / "x.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(notebook))
        normalized.append(records.normalize_executed_notebook(path, root=root).read_bytes())
    assert normalized[0] == normalized[1]
    assert json.loads(normalized[0])["metadata"]["papermill"] == {"input_path": "notebooks/10-baseline.py",
                                                                    "output_path": "results/executed/x.ipynb"}

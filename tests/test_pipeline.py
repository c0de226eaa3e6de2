"""python -m masklab run-notebook: parameters from params.yaml only, checked against the notebook; noise filtered."""

import os
import subprocess
import sys

import pytest
import yaml

from masklab import paths, pipeline


def test_every_stage_takes_its_parameters_from_params_yaml_as_typed_values():
    params = yaml.safe_load(paths.PARAMS_FILE.read_text())
    for stage in pipeline.NOTEBOOKS:
        dataset = None if stage in pipeline.WITHOUT_DATASET else params["datasets"][0]
        values = pipeline.stage_parameters(stage, dataset)
        assert {k: v for k, v in values.items() if k != "dataset"} == params[stage]
    assert pipeline.stage_parameters("pruning", "mnist_5k")["fractions"] == [0.0, 0.2, 0.4, 0.6, 0.8]


def test_keys_the_notebook_does_not_read_and_parameters_without_a_key_are_refused(tmp_path):
    params = yaml.safe_load(paths.PARAMS_FILE.read_text())
    params["baseline"]["epoch"] = 3  # a typo
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(pipeline.StageError, match=r"keys the notebook does not read: \['epoch'\]"):
        pipeline.stage_parameters("baseline", "mnist_5k", tmp_path / "typo.yaml")
    del params["baseline"]["epoch"], params["baseline"]["batch_size"]
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(pipeline.StageError, match=r"notebook parameters without a key: \['batch_size'\]"):
        pipeline.stage_parameters("baseline", "mnist_5k", tmp_path / "missing.yaml")
    with pytest.raises(pipeline.StageError, match="stage must be one of"):
        pipeline.stage_parameters("baselines", "mnist_5k")
    with pytest.raises(pipeline.StageError, match="needs a dataset"):
        pipeline.stage_parameters("baseline", None)
    with pytest.raises(pipeline.StageError, match="'cifar100' is not in datasets"):
        pipeline.stage_parameters("baseline", "cifar100")


def test_tensorflow_start_up_lines_are_dropped_from_a_child_process_stderr_and_the_rest_kept(capfd):
    noise = ("I0000 00:00:1795323748.201164   10815 port.cc:153] oneDNN custom operations are on.\n"
             "E0000 00:00:1795323750.963852   10815 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR\n"
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication ...\n")
    real = "Traceback (most recent call last): a real error stays visible\n"
    with pipeline.filtered_stderr():
        subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({noise + real!r})"], check=True)
    err = capfd.readouterr().err
    assert "a real error stays visible" in err
    assert "cuInit" not in err and "oneDNN" not in err and "absl" not in err and "without encryption" not in err
    assert os.get_blocking(2)  # fd 2 is back

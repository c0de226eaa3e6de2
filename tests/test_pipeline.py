"""python -m masklab run-notebook: parameters from params.yaml only, checked against the notebook; noise filtered;
results/ for the pipeline, scratch/ for interactive runs; the masklab kernel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from masklab import kernel, paths, pipeline

pytestmark = pytest.mark.backend_independent  # computes nothing with Keras: runs once (conftest.py)


def test_every_stage_takes_its_parameters_from_params_yaml_as_typed_values():
    params = yaml.safe_load(paths.PARAMS_FILE.read_text())
    for stage in pipeline.NOTEBOOKS:
        dataset = None if stage in pipeline.WITHOUT_DATASET else params["datasets"][0]
        values = pipeline.stage_parameters(stage, dataset)
        assert {k: v for k, v in values.items() if k not in ("dataset", "update_results")} == params[stage]
        assert values["update_results"] is True  # run-notebook (dvc repro) writes results/ and models/
    assert pipeline.stage_parameters("pruning", "mnist_5k")["fractions"] == [0.0, 0.25, 0.5, 0.75]


def test_every_notebook_writes_scratch_unless_asked_to_update_results():
    import papermill

    for stage, name in pipeline.NOTEBOOKS.items():
        declared = papermill.inspect_notebook(pipeline.read_notebook(paths.NOTEBOOKS_DIR / name))
        assert declared["update_results"]["default"] == "False", name
        assert "update_results" not in yaml.safe_load(paths.PARAMS_FILE.read_text())[stage]


def test_output_dirs_are_scratch_for_interactive_runs_and_results_for_the_pipeline():
    assert paths.output_dirs("baseline", "mnist_5k", True) == (paths.PROJ_ROOT / "results" / "baseline" / "mnist_5k",
                                                               paths.PROJ_ROOT / "models" / "baseline")
    interactive = paths.output_dirs("baseline", "mnist_5k", False)
    assert interactive.results == paths.PROJ_ROOT / "scratch" / "results" / "baseline" / "mnist_5k"
    assert interactive.models == paths.PROJ_ROOT / "scratch" / "models" / "baseline"
    assert paths.output_dirs("pruning", "mnist_5k", False, "/tmp/r", "/tmp/m") == (Path("/tmp/r"), Path("/tmp/m"))
    with pytest.raises(TypeError, match="update_results must be True or False. Received: update_results='True'"):
        paths.output_dirs("baseline", "mnist_5k", "True")
    ignored = (paths.PROJ_ROOT / ".gitignore").read_text().splitlines()
    assert "/scratch/" in ignored


def test_a_notebook_is_read_from_its_script_with_the_same_cell_ids_every_time():
    first, second = (pipeline.read_notebook(paths.NOTEBOOKS_DIR / "10-baseline.py") for _ in range(2))
    assert [c.id for c in first.cells] == [c.id for c in second.cells] == [f"cell-{i}"
                                                                           for i in range(1, len(first.cells) + 1)]
    assert "jupytext" not in first.metadata and first.metadata.kernelspec.name == kernel.KERNEL_NAME


def test_a_notebook_without_update_results_is_refused(tmp_path, monkeypatch):
    script = (paths.NOTEBOOKS_DIR / "30-sparse-connectivity.py").read_text()
    (tmp_path / "30-sparse-connectivity.py").write_text(script.replace("update_results = False", "writes = False"))
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path)
    with pytest.raises(pipeline.StageError, match="must declare update_results"):
        pipeline.stage_parameters("sparse_pathways", None)


def test_the_kernel_is_checked_to_run_this_python(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))  # searched before the environment
    kernel_dir, settings = kernel.install(tmp_path)
    spec = json.loads((kernel_dir / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and "--ext=masklab.kernel" in spec["argv"]
    assert spec["display_name"] == "Python 3 (masklab)"
    assert json.loads(settings.read_text())["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"] == {
        "python": "Jupytext Notebook"}
    assert kernel.check_installed() == "masklab"
    (kernel_dir / "kernel.json").write_text(json.dumps({**spec, "argv": ["/elsewhere/bin/python", *spec["argv"][1:]]}))
    with pytest.raises(RuntimeError, match="runs '/elsewhere/bin/python', not this Python"):
        kernel.check_installed()


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
             "E0000 00:00:1795330250.253165   31613 node_def_util.cc:682] NodeDef mentions attribute "
             "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset ...\n"
             "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication ...\n")
    real = ("Traceback (most recent call last): a real error stays visible\n"
            "E0000 00:00:1795323750.963852   10815 bfc_allocator.cc:52] a C++ error stays visible too\n"
            "a last line without a newline")
    with pipeline.filtered_stderr():
        subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({noise + real!r})"], check=True)
    err = capfd.readouterr().err
    assert err == real
    assert os.get_blocking(2)  # fd 2 is back

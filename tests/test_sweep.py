"""``make sweep`` / ``masklab.sweep``: queued DVC experiments of one stage, run by queue workers and collected.

Tried on a one-stage DVC project written here (a cheap stage: its metric is a known function of its
parameters), so the queue, the workers and ``dvc exp show`` are the real ones."""

import subprocess
import textwrap

import pytest
import yaml

from masklab import paths, sweep

pytestmark = pytest.mark.backend_independent  # computes nothing with Keras: runs once (conftest.py)


@pytest.fixture
def toy_project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("toy:\n  seed: 0\n  scale: 2.0\n")
    (root / "stage.py").write_text(textwrap.dedent("""
        import json, yaml
        params = yaml.safe_load(open("params.yaml"))["toy"]
        json.dump({"value": params["seed"] * params["scale"]}, open("metrics.json", "w"))
    """))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"toy": {
        "cmd": "python stage.py", "deps": ["stage.py"], "params": ["toy.seed", "toy.scale"],
        "metrics": [{"metrics.json": {"cache": False}}]}}}))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sweep._dvc_executable(), "init", "-q"], cwd=root, check=True)
    subprocess.run([sweep._dvc_executable(), "repro", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "toy"], cwd=root, check=True)
    return root


@pytest.mark.slow
def test_a_grid_sweep_runs_as_queued_experiments_and_is_collected(toy_project):
    table = sweep.sweep("toy", ["toy.seed=1,2,3", "toy.scale=10,100"], jobs=2, root=toy_project)
    assert len(table) == 6
    seeds, scales = table["params.yaml:toy.seed"], table["params.yaml:toy.scale"]
    assert sorted(zip(seeds, scales)) == [(s, c) for s in (1, 2, 3) for c in (10, 100)]
    assert (table["metrics.json:value"] == seeds * scales).all()  # each experiment ran with its own parameters
    workspace = yaml.safe_load((toy_project / "params.yaml").read_text())
    assert workspace == {"toy": {"seed": 0, "scale": 2.0}}  # the workspace is untouched
    status = subprocess.run(["git", "status", "--porcelain"], cwd=toy_project, capture_output=True, text=True)
    assert status.stdout == ""
    assert set(sweep.collect(list(table["name"][:2]), root=toy_project)["name"]) == set(table["name"][:2])


def test_bad_sweep_arguments_are_refused_by_name(toy_project):
    with pytest.raises(ValueError, match=r"each set must read 'dotted.key=value\[,value...\]'.*Received: 'toy.seed'"):
        sweep.queue("toy", ["toy.seed"], root=toy_project)
    with pytest.raises(ValueError, match=r"sets must be a non-empty list.*Received: sets='toy.seed=1'"):
        sweep.queue("toy", "toy.seed=1", root=toy_project)
    with pytest.raises(ValueError, match=r"jobs must be a positive integer. Received: jobs=0"):
        sweep.run_queue([], jobs=0, root=toy_project)
    with pytest.raises(RuntimeError, match=r"`dvc exp run --queue nope --set-param toy.seed=1` failed"):
        sweep.queue("nope", ["toy.seed=1"], root=toy_project)


def test_make_sweep_passes_its_variables_to_the_module():
    makefile = (paths.PROJ_ROOT / "Makefile").read_text()
    assert "python -m masklab.sweep $(STAGE)" in makefile
    dry = subprocess.run(["make", "-n", "sweep", "STAGE=baseline@mnist_5k", "SET=baseline.seed=0,1 baseline.epochs=2",
                          "JOBS=2"], cwd=paths.PROJ_ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "-m masklab.sweep baseline@mnist_5k --set 'baseline.seed=0,1' --set 'baseline.epochs=2' --jobs 2" in \
        dry.stdout


def project_root_seen(cwd, **env):
    import os
    import sys

    environment = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MASKLAB_ROOT")}
    out = subprocess.run([sys.executable, "-c", "from masklab import paths; print(paths.PROJ_ROOT)"], cwd=cwd,
                         env={**environment, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_queued_experiment_reads_and_writes_its_own_workspace(tmp_path):
    """DVC runs a queued experiment's stages in a temporary copy of the project, with DVC_ROOT naming the main
    repository and masklab imported from the main checkout: the anchor must be the copy."""
    copy = tmp_path / "exp-workspace"
    copy.mkdir()
    (copy / "dvc.yaml").write_text("stages: {}\n")
    (copy / "params.yaml").write_text("{}\n")
    assert project_root_seen(copy, DVC_ROOT=str(paths.PROJ_ROOT)) == str(copy.resolve())
    assert project_root_seen(copy) == str(paths.PROJ_ROOT)  # outside a stage: the checkout, not the cwd
    assert project_root_seen(tmp_path, DVC_ROOT=str(paths.PROJ_ROOT)) == str(paths.PROJ_ROOT)  # not a project
    assert project_root_seen(copy, DVC_ROOT="x", MASKLAB_ROOT=str(tmp_path)) == str(tmp_path.resolve())

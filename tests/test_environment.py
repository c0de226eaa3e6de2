"""The install files agree: pyproject pins, the lock file, environment.yml, the Makefile, dvc.yaml."""

import re
import tomllib

import pytest
import yaml

from masklab import paths

pytestmark = pytest.mark.backend_independent  # computes nothing with Keras: runs once (conftest.py)

ROOT = paths.PROJ_ROOT


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(requirements):
    out = {}
    for line in requirements:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def all_pyproject_requirements():
    project = pyproject()
    return project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]


def test_direct_dependencies_are_ranges_and_the_lock_file_pins_versions_inside_them():
    """pyproject declares compatible ranges (installable into a researcher's environment); the exact versions of the
    results live in the lock file, which must satisfy every range."""
    from packaging.requirements import Requirement

    locked = pins((ROOT / "requirements-lock.txt").read_text().splitlines())
    requirements = [Requirement(r) for r in all_pyproject_requirements()]
    exact = [str(r) for r in requirements if any(spec.operator == "==" for spec in r.specifier)]
    assert not exact, f"exact pins belong in requirements-lock.txt, not pyproject: {exact}"
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in locked, f"{name} is not pinned in requirements-lock.txt"
        assert requirement.specifier.contains(locked[name]), f"lock {name}=={locked[name]} outside {requirement}"
    for required in ("tensorflow", "keras", "tensorboard", "papermill", "jupyterlab", "ipykernel", "seaborn",
                     "scikit-learn", "dvc", "mlxtend", "pytest"):
        assert any(re.sub(r"[-_.]+", "-", r.name).lower() == required for r in requirements)
    assert locked["tensorflow"].startswith("2.21") and locked["keras"].startswith("3.")


def test_environment_yml_installs_this_package_the_way_the_makefile_does():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    assert pyproject()["requires-python"] == ">=3.11"
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r"^EXTRAS := (.+)$", makefile, re.M).group(1).strip()
    assert f"--editable .[{extras}]" in pip_section
    assert set(extras.split(",")) <= set(pyproject()["optional-dependencies"])
    assert "--constraint requirements-lock.txt" in pip_section and "--constraint requirements-lock.txt" in makefile
    # nothing installed by conda or pip in environment.yml that pyproject does not pin
    extra_lines = [line for line in pip_section if not line.startswith("--")]
    conda_packages = [d for d in env["dependencies"] if isinstance(d, str) and d not in ("pip", "python=3.11")]
    assert extra_lines == [] and conda_packages == []


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_dvc_stage_parameter_exists_in_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {"sparse_pathways", "sparse_connectivity"} <= set(stages)
    for name, stage in stages.items():
        for key in stage["do"]["params"] if "foreach" in stage else stage["params"]:
            for dataset in params["datasets"]:
                node = params
                for part in key.replace("${item}", dataset).split("."):
                    assert part in node, f"{name}: params key {key} missing for {dataset}"
                    node = node[part]


def test_the_built_wheel_installs_into_a_clean_venv_and_imports(tmp_path):
    """Build the wheel, install it (without dependencies: no network) into a fresh venv, import it there and check
    that every subpackage shipped and the metadata carries ranges, not pins. (Importing the subpackages needs
    the dependencies; the rest of the suite does that in .venv.)"""
    import subprocess
    import sys

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(wheels), str(ROOT)], check=True)
    (wheel,) = wheels.glob("masklab-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True)
    probe = ("import importlib.metadata as m, masklab; "
             "print(masklab.__version__); "
             "files = {str(f) for f in m.files('masklab')}; "
             "print(all(f in files for f in ['masklab/ablation/runner.py', 'masklab/surgery/rules/base.py', "
             "'masklab/layers/neuron_mask.py', 'masklab/experiments/unit_importance.py'])); "
             "print(any('==' in r.split(';')[0] for r in m.requires('masklab')))")
    out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout.split()
    assert out == [__import__("masklab").__version__, "True", "False"]

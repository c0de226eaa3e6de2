"""The install files agree: pyproject pins, the lock file, environment.yml, the Makefile, dvc.yaml."""

import re
import tomllib

import yaml

from masklab import paths

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


def test_every_direct_dependency_is_pinned_and_matches_the_lock_file():
    direct = pins(all_pyproject_requirements())
    assert all(direct.values()), f"unpinned: {[k for k, v in direct.items() if not v]}"
    locked = pins((ROOT / "requirements-lock.txt").read_text().splitlines())
    mismatched = {k: (v, locked.get(k)) for k, v in direct.items() if locked.get(k) != v}
    assert not mismatched, f"pyproject pin vs lock file: {mismatched}"
    for required in ("tensorflow", "keras", "papermill", "jupyterlab", "ipykernel", "seaborn", "scikit-learn",
                     "dvc", "mlxtend", "pytest"):
        assert required in direct
    assert direct["tensorflow"].startswith("2.21") and direct["keras"].startswith("3.")


def test_environment_yml_installs_this_package_the_way_the_makefile_does():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    assert pyproject()["requires-python"] == ">=3.11,<3.12"
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

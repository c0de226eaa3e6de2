"""Seed and parameter sweeps of any pipeline stage as queued DVC experiments.

``python -m masklab.sweep baseline@mnist_5k --set baseline.seed=0,1,2 --jobs 2`` (``make sweep``) queues one
experiment per combination of the comma-separated values (``dvc exp run --queue <stage> -S key=a,b``; several
``--set`` make a grid), runs the queue with ``--jobs`` workers (``dvc queue start --jobs N``, each experiment in its
own copy of the workspace, so the committed ``results/`` are untouched), waits for it, and prints the experiments'
parameters and metrics (``dvc exp show``). :func:`collect` reads them back as a table for a notebook. Experiments
stay in the repository's ``refs/exps`` until ``dvc exp remove``; ``dvc exp apply <name>`` brings one into the
workspace.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from masklab import paths

_ASSIGNMENT = re.compile(r"^[A-Za-z_][\w.\-]*=[^=]+$")


def _dvc(args: list[str], cwd: Path, capture: bool = True) -> str:
    executable = _dvc_executable()
    # the queue workers DVC starts find dvc (and the project's Python) on PATH: put this environment's first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    out = subprocess.run([executable, *args], cwd=cwd, capture_output=capture, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path})
    if out.returncode:
        detail = (out.stderr or out.stdout or "").strip()[-2000:] if capture else ""
        raise RuntimeError(f"`dvc {' '.join(args)}` failed (exit {out.returncode}) in {cwd}. {detail}")
    return out.stdout or ""


def _dvc_executable() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def check_assignments(assignments: list[str]) -> list[str]:
    """``key=value[,value...]`` strings as DVC's ``-S`` takes them; anything else is refused by name."""
    if isinstance(assignments, str) or not assignments:
        raise ValueError(f"sets must be a non-empty list of 'dotted.key=value[,value...]' strings. Received: "
                         f"sets={assignments!r}")
    for assignment in assignments:
        if not isinstance(assignment, str) or not _ASSIGNMENT.match(assignment):
            raise ValueError(f"each set must read 'dotted.key=value[,value...]', e.g. 'baseline.seed=0,1,2'. "
                             f"Received: {assignment!r}")
    return list(assignments)


def queue(stage: str, assignments: list[str], root: Path | None = None) -> list[str]:
    """Queue one experiment of ``stage`` per combination of the assigned values; returns the queued names."""
    root = Path(root or paths.PROJ_ROOT)
    if not isinstance(stage, str) or not stage.strip():
        raise ValueError(f"stage must name a stage of dvc.yaml, e.g. 'baseline@mnist_5k'. Received: stage={stage!r}")
    args = ["exp", "run", "--queue", stage]
    for assignment in check_assignments(assignments):
        args += ["--set-param", assignment]
    out = _dvc(args, root)
    return re.findall(r"Queued experiment '([^']+)'", out)


def run_queue(names: list[str], jobs: int = 1, root: Path | None = None, poll_seconds: float = 2.0,
              timeout_seconds: float | None = None) -> dict[str, str]:
    """Start ``jobs`` queue workers and wait until the experiments ``names`` are done; returns their status
    (``Success`` / ``Failed``...). A failed experiment's log: ``dvc queue logs <name>``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer. Received: jobs={jobs!r}")
    root = Path(root or paths.PROJ_ROOT)
    _dvc(["queue", "start", "--jobs", str(jobs)], root)
    started, idle_since = time.monotonic(), None
    while True:
        status, workers = queue_status(root)
        mine = {name: status.get(name, "Unknown") for name in names}
        if all(state not in ("Queued", "Running") for state in mine.values()):
            return mine
        now = time.monotonic()
        idle_since = (idle_since or now) if workers == 0 else None
        if idle_since is not None and now - idle_since > 30:
            raise RuntimeError(f"no queue worker is left while experiments wait: {mine}. Start them again with "
                               f"`dvc queue start --jobs {jobs}`; a worker's errors: `dvc queue logs <name>`")
        if timeout_seconds is not None and now - started > timeout_seconds:
            raise TimeoutError(f"the sweep did not finish within {timeout_seconds} s: {mine}")
        time.sleep(poll_seconds)


def queue_status(root: Path | None = None) -> tuple[dict[str, str], int]:
    """``({experiment name: status}, workers active or idle)`` from ``dvc queue status``."""
    out = _dvc(["queue", "status"], Path(root or paths.PROJ_ROOT))
    status, workers = {}, 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and re.fullmatch(r"[0-9a-f]{7}", fields[0]):
            status[fields[1]] = fields[-1]
        found = re.search(r"Worker status: (\d+) active, (\d+) idle", line)
        if found:
            workers = int(found.group(1)) + int(found.group(2))
    return status, workers


def collect(names: list[str] | None = None, root: Path | None = None) -> pd.DataFrame:
    """The experiments' parameters and metrics (``dvc exp show --json``), one row per experiment: ``name``,
    ``rev``, then each parameter as ``params.yaml:<dotted key>`` and each metric as ``<file>:<dotted key>``.
    ``names`` keeps only those experiments."""
    shown = json.loads(_dvc(["exp", "show", "--json"], Path(root or paths.PROJ_ROOT)))
    rows = []
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs", []):
                if names is not None and rev.get("name") not in names:
                    continue
                data = rev.get("data") or {}
                row = {"name": rev.get("name"), "rev": rev.get("rev")}
                for kind in ("params", "metrics"):
                    for file, content in (data.get(kind) or {}).items():
                        for key, value in _flatten(content.get("data") or {}).items():
                            row[f"{file}:{key}"] = value
                rows.append(row)
    return pd.DataFrame(rows)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def sweep(stage: str, assignments: list[str], jobs: int = 1, root: Path | None = None) -> pd.DataFrame:
    """Queue, run and collect (the module's docstring). Raises when an experiment failed, naming it."""
    names = queue(stage, assignments, root)
    if not names:
        raise RuntimeError(f"dvc queued no experiment for stage {stage!r} with {assignments}")
    status = run_queue(names, jobs, root)
    failed = sorted(name for name, state in status.items() if state != "Success")
    if failed:
        raise RuntimeError(f"experiments {failed} did not succeed ({status}); see `dvc queue logs <name>`")
    return collect(names, root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m masklab.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="a stage of dvc.yaml, e.g. baseline@mnist_5k")
    parser.add_argument("--set", dest="sets", action="append", required=True, metavar="KEY=V1,V2",
                        help="a params.yaml key and its values (repeat for a grid)")
    parser.add_argument("--jobs", type=int, default=1, help="queue workers running side by side (default 1)")
    args = parser.parse_args(argv)
    try:
        table = sweep(args.stage, args.sets, args.jobs)
    except (ValueError, RuntimeError, TimeoutError) as error:
        print(f"sweep: {error}", file=sys.stderr)
        return 1
    table = table.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)  # hashable, printable
    swept = {f"params.yaml:{assignment.split('=', 1)[0]}" for assignment in args.sets}
    changed = [c for c in table.columns if c in ("name", "rev") or c in swept or
               table[c].nunique(dropna=False) > 1 or not c.startswith("params.yaml:")]
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(table[changed].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

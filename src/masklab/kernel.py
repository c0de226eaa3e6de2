"""The project's Jupyter kernel, ``masklab`` ("Python 3 (masklab)"): ipykernel on this environment's Python, with
TensorFlow's C++ start-up lines kept out of notebooks. Every notebook names it; ``run-notebook`` runs them with it.

``python -m masklab install-jupyter`` (run by ``make install``) writes its kernelspec into this environment
(``<sys.prefix>/share/jupyter/kernels/masklab``, like ``ipykernel install --sys-prefix``) and a JupyterLab setting,
in the same prefix, that opens the percent-format notebooks (``notebooks/*.py``) as notebooks on a double click.

Why a filter: TensorFlow >= 2.19 writes its start-up notes (oneDNN, CUDA probing on machines without a GPU) from its
shared libraries while they load, through absl before absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL``
(which masklab sets to 2) does not hold them back; ipykernel forwards whatever reaches file descriptor 2 into the
notebook as a red stderr block. The kernelspec loads this module as an IPython extension (``--ext masklab.kernel``),
which puts :func:`filter_lines` in front of descriptor 2: the lines of :data:`NOISE` are dropped, every other line
passes, in order. Python's own warnings and tracebacks do not go through descriptor 2 and are untouched.
``TF_CPP_MIN_LOG_LEVEL=0`` turns the filter off.
"""

from __future__ import annotations

import json
import os
import re
import select
import sys
import tempfile
import threading
from pathlib import Path

KERNEL_NAME = "masklab"
DISPLAY_NAME = "Python 3 (masklab)"

# Lines that say nothing about a run: absl's INFO / WARNING lines (what TF_CPP_MIN_LOG_LEVEL=2 means to hide, and
# does not, see above), absl's preamble, the continuation line of TensorFlow's CPU-instruction note, the CUDA probing
# errors of a machine without a usable GPU, the graph-attribute notice that tf.data logs as an error ("This may be
# expected if your graph generating binary is newer than this binary. Unknown attributes will be ignored.") and
# ipykernel's transport warning (the kernel's own log, in the terminal of `run-notebook`). Other ERROR and FATAL
# lines pass.
_ABSL = rb"\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
NOISE = re.compile(rb"^(?:[IW]" + _ABSL
                   + rb"|E" + _ABSL + rb"(?:failed call to cuInit|Unable to register cu(?:DNN|FFT|BLAS) factory"
                                     rb"|NodeDef mentions attribute \S+ which is not in the op definition)"
                   rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                   rb"|To enable the following instructions: .* rebuild TensorFlow"
                   rb"|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption)")

# JupyterLab's per-environment setting overrides (<sys.prefix>/share/jupyter/lab/settings/overrides.d/*.json):
# a double click opens a .py file with jupytext's notebook view. A user's own settings still win.
LAB_SETTINGS = {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}


def filter_lines(fd: int = 2):
    """Route file descriptor ``fd`` through a daemon thread that writes every line but those of :data:`NOISE` to
    where ``fd`` pointed before. Returns a function that restores ``fd`` (and waits for the last lines)."""
    original = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def pump():
        pending = b""
        while True:
            # a partial line is passed on once nothing followed it for 0.2 s (a noise line comes whole, one write)
            if not select.select([read_end], [], [], 0.2 if pending else None)[0]:
                os.write(original, pending)
                pending = b""
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not NOISE.match(line):
                    os.write(original, line + b"\n")
        if pending and not NOISE.match(pending):
            os.write(original, pending)
        os.close(read_end)

    thread = threading.Thread(target=pump, name=f"masklab-filter-fd{fd}", daemon=True)
    thread.start()

    def restore():
        os.dup2(original, fd)  # closes the pipe's last write end: the pump sees end-of-file
        thread.join(timeout=10)
        os.close(original)

    return restore


def load_ipython_extension(ipython) -> None:
    """IPython extension hook (``--ext masklab.kernel``): filter descriptor 2 for the life of the kernel."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") != "0" and not getattr(load_ipython_extension, "active", False):
        sys.stderr.flush()
        filter_lines(2)
        load_ipython_extension.active = True


def install(prefix: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write the ``masklab`` kernelspec (this Python, ``--ext masklab.kernel``) and :data:`LAB_SETTINGS` under
    ``prefix`` (default ``sys.prefix``: only this environment sees them); returns both paths."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = Path(prefix or sys.prefix)
    with tempfile.TemporaryDirectory() as scratch:
        spec = write_kernel_spec(Path(scratch) / KERNEL_NAME, overrides={"display_name": DISPLAY_NAME},
                                 extra_arguments=["--ext=masklab.kernel"], python_arguments=["-Xfrozen_modules=off"])
        kernel_dir = KernelSpecManager().install_kernel_spec(spec, KERNEL_NAME, prefix=str(prefix))
    settings = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.d" / "masklab.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(LAB_SETTINGS, indent=2) + "\n")
    return Path(kernel_dir), settings


def check_installed() -> str:
    """The name of the kernel that runs notebooks (:data:`KERNEL_NAME`), after checking that Jupyter finds it and
    that it runs this Python; a ``RuntimeError`` says how to install it otherwise."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    fix = "run `make install` (or `python -m masklab install-jupyter`) with this environment's Python"
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        raise RuntimeError(f"Jupyter kernel {KERNEL_NAME!r} is not installed: {fix}") from None
    command = spec.argv[0] if spec.argv else ""
    # jupyter_client runs sys.executable for a bare "python"; otherwise the command must sit in this environment's bin/
    if command not in {"python", "python3", f"python3.{sys.version_info.minor}"} and \
            os.path.dirname(os.path.abspath(command)) != os.path.dirname(os.path.abspath(sys.executable)):
        raise RuntimeError(f"Jupyter kernel {KERNEL_NAME!r} ({spec.resource_dir}) runs {command!r}, not this "
                           f"Python ({sys.executable}): {fix}")
    return KERNEL_NAME

"""masklab: switch neurons off on purpose and measure what happens."""

import os

# Before anything imports TensorFlow: hide its C++ INFO and WARNING logs. Errors still show; set
# TF_CPP_MIN_LOG_LEVEL=0 to see all. TensorFlow >= 2.19 writes its start-up notes (oneDNN, CUDA probing on machines
# without a GPU) while its libraries load, before this applies: the masklab kernel and run-notebook filter those
# lines out (masklab.kernel).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A DVC stage command runs in its stage's workspace, the project root, and DVC marks it with DVC_ROOT. For a queued
# experiment (make sweep) that workspace is a temporary copy of the project while this package may be installed
# from the main checkout: every path must then come from the copy, or the experiment would read and write the
# main checkout's params, data and results. So inside a stage run from a project root (dvc.yaml and params.yaml
# in the working directory), MASKLAB_ROOT, masklab.paths' anchor, is that directory, for this process and the
# notebook kernels it starts. Elsewhere the anchor is MASKLAB_ROOT if set, else the checkout holding this package.
if "DVC_ROOT" in os.environ and "MASKLAB_ROOT" not in os.environ and \
        os.path.isfile("dvc.yaml") and os.path.isfile("params.yaml"):
    os.environ["MASKLAB_ROOT"] = os.getcwd()

__version__ = "0.1.0"

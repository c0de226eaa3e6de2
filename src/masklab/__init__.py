"""masklab: switch neurons off on purpose and measure what happens."""

import os

# Before anything imports TensorFlow: hide its C++ INFO and WARNING logs. Errors still show; set
# TF_CPP_MIN_LOG_LEVEL=0 to see all. TensorFlow >= 2.19 writes its start-up notes (oneDNN, CUDA probing on machines
# without a GPU) while its libraries load, before this applies: the masklab kernel and run-notebook filter those
# lines out (masklab.kernel).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

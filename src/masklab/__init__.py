"""masklab: switch neurons off on purpose and measure what happens."""

import os

# Before anything imports TensorFlow: keep its C++ start-up notes (CPU instruction sets, oneDNN, CUDA probing on
# machines without a GPU) out of notebooks and terminals. Errors still show; set TF_CPP_MIN_LOG_LEVEL=0 to see all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

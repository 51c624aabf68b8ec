"""latentserve's online half: a FastAPI service over exported ONNX / TorchScript graphs.

BLAS and OpenMP thread pools are capped at one thread before NumPy loads (unless set already):
the service runs graphs and scores in its own bounded pool (`--inference-threads`), and a second
layer of spinning BLAS threads per call would contend with it and with the event loop (the gan's
latent-search score is a matrix product).
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

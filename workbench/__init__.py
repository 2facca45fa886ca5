"""Workbench for multimodal product retrieval and ranking."""

from workbench.reproducibility import pin_process as _pin_process

__version__ = "0.1.0"

# Before torch, numpy's BLAS or numba load: their kernels are chosen once, at load
# time, from these settings (see workbench.reproducibility for the contract).
_pin_process()

"""The SIMD kernels ScaNN runs at in this process (`scann_kernels`), set before the first
searcher exists, and the import of ScaNN itself."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from workbench.errors import ConfigError

log = logging.getLogger(__name__)

# ScaNN picks its kernels (LUT16 asymmetric hashing, k-means, dot products) by the flags
# research_scann::flags_internal::should_use_avx2 / should_use_avx512, set at load time
# from `port::TestCPUFeature`. In the scann 1.4.2 wheel that function is compiled to
# `return false` (its CPUID block is guarded by a macro the wheel's build never defines),
# so every CPU runs the SSE4/AVX1 fallback. Measured on a 2-core AVX-512 Xeon, 100k x 256:
# the AVX2 kernels search 1.3x faster at the same recall and train the index ~1.3x faster;
# AVX2 and AVX-512 builds were byte-identical and every kernel level returned the same
# neighbours. So the flags are set here, once, from the CPU's own feature bits, before the
# first searcher is built or loaded (kernels are chosen per call; layouts do not depend on
# them, so a saved index loads under any level).

SCANN_KERNELS = ("baseline", "avx2", "avx512")
SCANN_KERNELS_ENV = "WORKBENCH_SCANN_KERNELS"
# AVX2 is the level every other numeric library is capped at (workbench.reproducibility):
# the same kernels on every AVX2 machine. AVX-512 measured no faster here (see bench_index).
DEFAULT_SCANN_KERNELS = "avx2"
_KERNEL_FEATURES = {
    "baseline": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"),
}
_NUMPY_FEATURES = {"avx2": "AVX2", "fma": "FMA3", "avx512f": "AVX512F", "avx512dq": "AVX512DQ",
                   "avx512bw": "AVX512BW", "avx512vl": "AVX512VL"}
_scann_kernels_in_use: str | None = None
_KERNELS_LOCK = threading.Lock()


def _cpu_has(level: str) -> bool:
    """Whether this CPU (and OS) runs `level`'s instructions: /proc/cpuinfo and numpy's own
    CPUID probe must both say so (a wrong answer here would be an illegal instruction)."""
    from workbench.reproducibility import cpu_flags

    wanted = _KERNEL_FEATURES[level]
    if not wanted:
        return True
    if not set(wanted) <= cpu_flags():
        return False
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as probed
    except ImportError:  # pragma: no cover - numpy < 2 or a layout change: cpuinfo alone
        return True
    # NPY_DISABLE_CPU_FEATURES (the pinning) hides only numpy's own AVX-512 loop groups,
    # not these base bits, so they still report the CPU
    return all(probed.get(_NUMPY_FEATURES[f], False) for f in wanted)


def scann_kernels(requested: str | None = None) -> str:
    """The SIMD level ScaNN runs at in this process: "baseline" (the wheel's SSE4/AVX1
    code), "avx2" or "avx512".

    Decided once, at the first ScaNN build or load: `WORKBENCH_SCANN_KERNELS` if set, else
    `DEFAULT_SCANN_KERNELS`, lowered to what the CPU supports. `requested` (before any
    searcher exists) asks for a level explicitly, e.g. a benchmark comparing them; later
    calls return the level in effect, since kernels must not change under live searchers.
    """
    global _scann_kernels_in_use
    with _KERNELS_LOCK:
        if _scann_kernels_in_use is not None:
            if requested is not None and requested != _scann_kernels_in_use:
                raise ConfigError(
                    f"scann_kernels({requested!r}): ScaNN already runs {_scann_kernels_in_use!r} "
                    "kernels in this process; choose the level before the first index is built"
                )
            return _scann_kernels_in_use
        level = requested or os.environ.get(SCANN_KERNELS_ENV, "").strip() or DEFAULT_SCANN_KERNELS
        if level not in SCANN_KERNELS:
            raise ConfigError(
                f"{SCANN_KERNELS_ENV}={level!r}: expected one of {', '.join(SCANN_KERNELS)}"
            )
        # the best level at or below the one asked for that this CPU runs
        for candidate in SCANN_KERNELS[SCANN_KERNELS.index(level) :: -1]:
            if _cpu_has(candidate):
                break
        _scann_kernels_in_use = _apply_scann_kernels(candidate)
        if _scann_kernels_in_use != level:
            log.info("ScaNN kernels: %s requested, %s in use", level, _scann_kernels_in_use)
        return _scann_kernels_in_use


def _apply_scann_kernels(level: str) -> str:
    """Set ScaNN's dispatch flags for `level`; returns the level actually set."""
    import ctypes

    _scann_module()
    native = sys.modules.get("scann_pybind")
    if native is None or not getattr(native, "__file__", None):  # pragma: no cover
        return "baseline"
    try:
        lib = ctypes.CDLL(native.__file__)  # the library already loaded: same handle
        flags = {
            name: ctypes.c_bool.in_dll(
                lib, f"_ZN14research_scann14flags_internal{len(name)}{name}E"
            )
            for name in ("should_use_avx2", "should_use_avx512")
        }
    except (OSError, ValueError) as exc:  # another scann build without these symbols
        log.debug("ScaNN kernels left as built (%s)", exc)
        return "baseline"
    flags["should_use_avx2"].value = level in ("avx2", "avx512")
    flags["should_use_avx512"].value = level == "avx512"
    return level


def _scann_module() -> Any:
    try:
        from scann.scann_ops.py import scann_ops_pybind
    except ImportError as exc:  # pragma: no cover - scann is a Linux dependency
        raise ConfigError(
            "IndexConfig.kind='scann' needs the scann package (Linux); use kind='exact'"
        ) from exc
    return scann_ops_pybind


def _scann() -> Any:
    ops = _scann_module()
    scann_kernels()  # before the first searcher: see the comment above SCANN_KERNELS
    return ops

"""The reproducibility contract: what is pinned before the numeric libraries load, and what a run records.

**Contract.** On the deterministic path (the ``ci`` profile: tests, ``make demo``,
``workbench run --profile ci``) the same machine and seed give a byte-identical
``metrics.json``; on any other x86-64 machine every metric stays within the
tolerance that :mod:`workbench.evaluate.tolerance` states for it.

torch (ATen), MKL, oneDNN, OpenBLAS, numpy and numba each pick their kernels by
CPU (AVX2 or AVX-512, Intel or AMD), and with them the order of floating-point
operations; none promises equal bits across CPUs. Each reads an environment
variable, *once, when it loads*, that caps or fixes that choice, and thread
counts change how reductions are split. So before any of them is imported,
:func:`pin_process` sets (only where the user has not set them already):

* ``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``: torch's own
  kernels and oneDNN's at most AVX2, a level every x86-64 CPU of the last decade has;
* ``MKL_CBWR=COMPATIBLE``: MKL's conditional-numerical-reproducibility branch
  that gives the same results on Intel and AMD processors;
* ``OPENBLAS_CORETYPE=Haswell`` (numpy's and scipy's BLAS) and
  ``NPY_DISABLE_CPU_FEATURES`` (numpy's AVX-512 loops) to the same AVX2 level;
* ``NUMBA_CPU_NAME=generic`` (UMAP's numba code compiled for any x86-64);
* ``OMP_NUM_THREADS`` and friends to :data:`DETERMINISTIC_THREADS` (one),
  whatever the machine's core count: thread counts change how reductions are
  split, and MKL's multi-threaded GEMM is not even run-to-run reproducible
  (measured: the same three-epoch training gave a different loss in the 7th digit
  in 2 of 6 runs with two MKL threads, 0 of 8 with one). torch sizes its own pool
  to MKL's, so one thread it is; small models on shared cores lose little by it.

What cannot be pinned: ScaNN chooses its SIMD path itself, and a CPU without
AVX2 falls back to slower, different kernels. Those are what the tolerances
are for. ``import workbench`` calls :func:`pin_process` for the deterministic
profile (``WORKBENCH_PROFILE`` unset or ``ci``), so notebook kernels, papermill
and nbval children, which inherit the environment, are pinned too;
``WORKBENCH_PIN=0`` opts out. :func:`environment` records what took effect.

This module imports nothing from the rest of the workbench, and no numeric
library at module level: it must run before them.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

DETERMINISTIC_PROFILES = ("ci",)
DETERMINISTIC_THREADS = 1
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
# Kernel caps that are safe on every x86-64 CPU with AVX2 (set only where the CPU has it).
AVX2_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
# Settings that are safe on any x86-64 CPU.
PORTABLE_KERNELS = {
    "MKL_CBWR": "COMPATIBLE",
    "NUMBA_CPU_NAME": "generic",
}
NUMERIC_MODULES = ("torch", "numpy", "scipy", "numba", "sklearn", "scann")
PACKAGES = (
    "workbench", "numpy", "scipy", "polars", "pyarrow", "torch", "torchvision", "torchaudio",
    "transformers", "safetensors", "scann", "faiss-cpu", "scikit-learn", "umap-learn", "numba",
    "plotly", "papermill", "pytrec-eval-terrier", "pillow", "soundfile",
)
# The ISA flags that decide which kernels the libraries above choose.
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
)

# Which variables a workbench process pinned (inherited by notebook kernels and subprocesses,
# so a child can tell the workbench's own settings from the user's).
MARKER = "WORKBENCH_PINNED"
_loaded_before_pin: list[str] = []


def _ours() -> set[str]:
    return {n for n in os.environ.get(MARKER, "").split(",") if n}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pinned_settings(flags: frozenset[str] | None = None) -> dict[str, str]:
    """The environment the deterministic path wants on this CPU."""
    settings = {v: str(DETERMINISTIC_THREADS) for v in THREAD_VARIABLES}
    if platform.machine().lower() in ("x86_64", "amd64"):
        settings.update(PORTABLE_KERNELS)
        if "avx2" in (cpu_flags() if flags is None else flags):
            settings.update(AVX2_KERNELS)
    return settings


def is_deterministic_profile(profile: str | None = None) -> bool:
    profile = profile if profile is not None else os.environ.get("WORKBENCH_PROFILE", "ci")
    return profile in DETERMINISTIC_PROFILES


def pin_process(profile: str | None = None) -> dict[str, str]:
    """Set the deterministic path's environment (where unset) before numeric libraries load.

    Returns the variables this call set. A variable the user set is kept (and
    reported by :func:`environment` as theirs). Numeric modules imported before
    this call chose their kernels unpinned; they are recorded too. For a
    non-deterministic profile (``full``) the variables a workbench process set
    are removed again, so a full run gets every core and the native kernels.
    """
    if os.environ.get("WORKBENCH_PIN", "1") == "0":
        return {}
    if not is_deterministic_profile(profile):
        unpin_process()
        return {}
    ours = _ours()
    set_now: dict[str, str] = {}
    for name, value in pinned_settings().items():
        if name not in os.environ:
            os.environ[name] = value
            ours.add(name)
            set_now[name] = value
    os.environ[MARKER] = ",".join(sorted(ours))
    if set_now:
        _loaded_before_pin[:] = sorted(m for m in NUMERIC_MODULES if m in sys.modules)
    return set_now


def unpin_process() -> None:
    """Remove the variables a workbench process pinned (they matter only before the libraries load)."""
    for name in _ours():
        os.environ.pop(name, None)
    os.environ.pop(MARKER, None)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _torch_facts() -> dict[str, Any]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return {}
    facts: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    try:
        facts["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch: not exposed
        pass
    facts["cuda"] = torch.cuda.is_available()
    if facts["cuda"]:
        facts["cuda_device"] = torch.cuda.get_device_name(0)
        facts["cuda_version"] = torch.version.cuda
    return facts


def environment() -> dict[str, Any]:
    """What shaped this process's numbers: CPU, ISA flags, pinned settings, threads, versions.

    Written as ``environment.json`` beside every report (never inside
    ``metrics.json``, which must not depend on the machine).
    """
    flags = cpu_flags()
    wanted = pinned_settings(flags) if is_deterministic_profile() else {}
    ours = _ours()
    names = sorted(set(wanted) | ours)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "isa_flags": [f for f in ISA_FLAGS if f in flags],
        "deterministic_profile": is_deterministic_profile(),
        "pinned": {
            "wanted": wanted,
            "effective": {n: os.environ.get(n) for n in names},
            "set_by_user": {n: os.environ[n] for n in names if n in os.environ and n not in ours},
            "loaded_before_pin": list(_loaded_before_pin),
        },
        **_torch_facts(),
        # the SIMD level ScaNN runs at, once an index was built or loaded (workbench.index.scann_simd
        # sets it; read from there without importing it, which sits above this module)
        "scann_kernels": getattr(sys.modules.get("workbench.index.scann_simd"), "_scann_kernels_in_use", None),
        "packages": {p: v for p in PACKAGES if (v := _version(p)) is not None},
    }


# --------------------------------------------------------------------------- timings live apart

_TIMING_KEY = re.compile(
    r"(^|_)(qps|seconds|secs|wall|time|times|timing|timings|latency|throughput)($|_)"
    r"|_(s|ms|us)$|per_s(ec)?$|_per_second$",
    re.I,
)


def split_timings(obj: Any, names: frozenset[str] = frozenset()) -> tuple[Any, Any]:
    """(obj without timing entries, the timing entries) for nested metrics dicts and lists.

    Timings vary run to run, so they go to ``timings.json`` and never into a
    ``metrics.json`` that must be byte-identical between runs.

    A key is a timing when its name says so (``qps``, ``*_s``, ``*_ms``,
    ``*per_s``, ``seconds``, ``latency``, ``time``..., e.g. ``exact_qps``,
    ``build_s``, ``samples_per_s``) or when a ``timing_keys`` list next to it
    names it (notebook 06 writes one).
    """
    if isinstance(obj, list):
        pairs = [split_timings(v, names) for v in obj]
        moved = [m for _, m in pairs]
        return [k for k, _ in pairs], (moved if any(moved) else {})
    if not isinstance(obj, Mapping):
        return obj, {}
    listed = obj.get("timing_keys")
    if isinstance(listed, list):
        names = names | {str(n) for n in listed}
    kept: dict[Any, Any] = {}
    timings: dict[Any, Any] = {}
    for key, value in obj.items():
        if key in names or _TIMING_KEY.search(str(key)):
            timings[key] = value
            continue
        sub_kept, sub_moved = split_timings(value, names)
        kept[key] = sub_kept
        if sub_moved:
            timings[key] = sub_moved
    return kept, timings

"""Where a benchmark ran: speed ratios hold per machine (numpy vectorises ``exp`` only where it
dispatches AVX-512, for one), so every benchmark prints this first and puts it in its JSON."""

from __future__ import annotations

import os
import platform


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _numpy_simd() -> dict:
    """The SIMD targets numpy was built for and the best one this CPU runs."""
    from numpy._core import _multiarray_umath as umath

    supported = {name for name, present in umath.__cpu_features__.items() if present}
    dispatched = [target for target in umath.__cpu_dispatch__ if target in supported]
    return {"baseline": list(umath.__cpu_baseline__), "dispatched": dispatched,
            "best": dispatched[-1] if dispatched else (umath.__cpu_baseline__ or ["none"])[-1],
            "avx512": any(name.startswith("AVX512") for name in supported)}


def _numba_target() -> dict:
    import llvmlite.binding as llvm
    import numba

    return {"cpu": numba.config.CPU_NAME or llvm.get_host_cpu_name(), "threads": numba.config.NUMBA_NUM_THREADS}


def describe() -> dict:
    """CPU model, logical cores, numpy's SIMD level, numba's target and the thread settings."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "numpy_simd": _numpy_simd(), "numba": _numba_target(),
            "threads_env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS") if name in os.environ}}


def summary_line(machine: dict) -> str:
    simd = machine["numpy_simd"]
    return (f"machine: {machine['cpu']}, {machine['cores']} cores; numpy SIMD {simd['best']} "
            f"(AVX-512 {'yes' if simd['avx512'] else 'no'}); numba target {machine['numba']['cpu']}, "
            f"{machine['numba']['threads']} threads")


if __name__ == "__main__":
    print(summary_line(describe()))

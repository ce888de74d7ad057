"""Where a benchmark ran: speed ratios hold per machine (numpy vectorises ``exp`` only where it
dispatches AVX-512, for one), so every benchmark prints this first and puts it in its JSON."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

#: Feature bit of virtio-balloon's free page reporting (Linux ``include/uapi/linux/virtio_balloon.h``).
_BALLOON_REPORTING_BIT = 5


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


def _first_touch(idle: float, mib: int = 64) -> dict:
    """Milliseconds per MiB to fill freshly allocated memory at once after freeing as much (pages
    the kernel recycles) and after ``idle`` seconds.  A virtual machine that reports free pages to
    its host (virtio-balloon free page reporting) may have handed them back by then, and each is
    faulted in again: on the README's Firecracker host once 1.99 against 0.19 ms/MiB, at other
    times no difference, which moves a timing whose memory or page cache comes fresh (a store
    written) by up to tenths of a second."""
    import numpy as np

    def fill() -> float:
        start = time.perf_counter()
        np.ones(mib * 2**17)  # float64: mib MiB, freed on return
        return (time.perf_counter() - start) * 1e3 / mib

    fill()
    recycled = fill()
    time.sleep(idle)
    return {"recycled_ms_per_mib": recycled, "after_idle_ms_per_mib": fill(), "idle_seconds": idle}


def _idle_memory_policy(sysfs: Path = Path("/sys")) -> dict:
    """What the kernel does with memory left idle, which makes fresh memory cost: virtio-balloon
    free page reporting (freed pages handed back to the host) and the DAMON schemes at work (their
    action and the idle seconds after which they act; the README's host pages out page cache left
    untouched for 60 s).  What cannot be read counts as absent."""
    def read(path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return ""

    reporting = any(read(features)[_BALLOON_REPORTING_BIT:_BALLOON_REPORTING_BIT + 1] == "1"
                    for features in sysfs.glob("bus/virtio/drivers/virtio_balloon/*/features"))
    schemes = []
    for kdamond in sysfs.glob("kernel/mm/damon/admin/kdamonds/[0-9]*"):
        if read(kdamond / "state") != "on":
            continue
        for context in kdamond.glob("contexts/[0-9]*"):
            aggregation_us = int(read(context / "monitoring_attrs/intervals/aggr_us") or 0)
            for scheme in context.glob("schemes/[0-9]*"):
                min_age = int(read(scheme / "access_pattern/age/min") or 0)
                schemes.append({"action": read(scheme / "action"), "idle_seconds": min_age * aggregation_us / 1e6})
    return {"free_page_reporting": reporting, "damon_schemes": schemes}


def describe(idle: float = 3.0) -> dict:
    """CPU model, logical cores, numpy's SIMD level, numba's target, the thread settings and what
    fresh memory costs (:func:`_first_touch` after ``idle`` seconds, and the kernel's policy for idle
    memory)."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "numpy_simd": _numpy_simd(), "numba": _numba_target(),
            "threads_env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS") if name in os.environ},
            "first_touch": _first_touch(idle),
            "idle_memory": _idle_memory_policy()}


def summary_line(machine: dict) -> str:
    simd, touch, idle = machine["numpy_simd"], machine["first_touch"], machine["idle_memory"]
    policy = ["free pages reported to the host"] if idle["free_page_reporting"] else []
    policy += [f"DAMON {scheme['action']} after {scheme['idle_seconds']:g} s idle" for scheme in idle["damon_schemes"]]
    return (f"machine: {machine['cpu']}, {machine['cores']} cores; numpy SIMD {simd['best']} "
            f"(AVX-512 {'yes' if simd['avx512'] else 'no'}); numba target {machine['numba']['cpu']}, "
            f"{machine['numba']['threads']} threads; filling freed memory {touch['recycled_ms_per_mib']:.2f} ms/MiB "
            f"at once, {touch['after_idle_ms_per_mib']:.2f} after {touch['idle_seconds']:.0f} s idle; "
            f"idle memory: {', '.join(policy) or 'kept'}")


if __name__ == "__main__":
    print(summary_line(describe()))

"""Process-wide memory: allocator tuning for processes that serve frames (the node, benchmarks),
and the peak-growth measurement that bounds what a model may allocate at start-up."""

from __future__ import annotations

import ctypes
import resource

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def retain_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Keep the memory a frame frees for the next frame instead of handing it back to the kernel.

    A CPU forward pass frees and re-allocates the same activation buffers every frame. glibc
    returns big blocks to the kernel (munmap, and trimming of thread arenas), so the next frame
    faults every page back in, zero-filled: about 4000 minor page faults and 5-13 ms per 640x480
    frame with the default student, about 10 % of its forward pass. Whether a process pays this
    depends on its allocation history (glibc moves its mmap threshold as blocks are freed): the
    same model ran 10 % slower in the node than in a script. Fixed thresholds make every process
    fast. Process-wide, so the process owner calls it (the node's main, benchmarks), never the
    library. Returns False where the C library has no glibc mallopt (then nothing changes).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def _status_kib(field: str) -> int | None:
    """A `VmRSS:`-style line of /proc/self/status in KiB, or None where there is no procfs."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakGrowth:
    """How far the process's resident memory peaked above where it stood at construction.

    For bounding what loading and warming up a model allocates: a graph can allocate gigabytes
    at run time that no weight count shows (a ConstantOfShape 30000x30000 took 4 GB). On Linux
    the kernel's peak (VmHWM) is reset first (/proc/self/clear_refs "5"), so the peak of this
    block is measured even when the process peaked higher before; elsewhere the rusage peak is
    used, which only sees growth above the earlier peak (an underestimate, never an overcount).
    Process-wide: other threads' allocations count too (the node allocates little besides).
    """

    def __init__(self) -> None:
        self._rss = _status_kib("VmRSS")
        self._reset = False
        if self._rss is not None:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._reset = True
            except OSError:
                pass
        self._maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    def bytes(self) -> int:
        """Peak resident memory since construction minus resident memory at construction."""
        peak = _status_kib("VmHWM") if self._reset else None
        if peak is None or self._rss is None:
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return max(maxrss - self._maxrss, 0) * 1024
        return max(peak - self._rss, 0) * 1024

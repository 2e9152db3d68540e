"""Process-wide allocator tuning for processes that serve frames (the node, benchmarks)."""

from __future__ import annotations

import ctypes

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

"""Settings of the host process that training depends on for speed, not for results."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap and stay there when freed.
KEEP_FREED_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks of up to 1 GiB for reuse instead of returning them to the
    kernel; returns whether the setting applied (glibc on Linux only).

    By default glibc maps every block above 32 MiB afresh and unmaps it when freed. CPU
    training allocates activations of that size (a batch of 3-D feature maps) and frees them
    every step, so each step faulted in its memory again: on the volume presets a third of the
    step's CPU time was system time. The process's peak memory stays what the step needs.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES) and mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    )

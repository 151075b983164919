"""Settings of the host process that training depends on for speed, not for results."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

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


#: The x86 CPU features that give bf16 arithmetic its own units (AVX-512 BF16, AMX tiles).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo_text: str) -> set[str] | None:
    """The x86 feature flags of a ``/proc/cpuinfo`` text; None when it lists none (another
    architecture, or no text)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def _read_cpuinfo() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def cpu_bf16_warning(
    precision: Any,
    accelerator: Any,
    cpuinfo_text: str | None = None,
    *,
    cuda_available: bool | None = None,
) -> str | None:
    """Why a bf16 run on this CPU will be slow, or None when it will not be (or cannot tell).

    bf16 pays on a CPU only with ``avx512_bf16`` or ``amx_bf16``; without them PyTorch emulates
    bf16 through fp32 conversions, so a ``bf16-mixed`` run on an AVX2-only CPU takes several
    times as long as ``32-true``. Applies when ``precision`` names bf16 and the run trains on the CPU
    (``accelerator`` cpu, or auto without CUDA). ``cpuinfo_text`` is ``/proc/cpuinfo`` (read
    when None; on other systems, and on CPUs that list no x86 flags, nothing is said).
    """
    if "bf16" not in str(precision):
        return None
    accelerator = str(accelerator).lower()
    if accelerator == "auto":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if cuda_available:
            return None
    elif accelerator != "cpu":
        return None
    text = _read_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    flags = cpu_flags(text) if text is not None else None
    if flags is None or flags & set(BF16_CPU_FLAGS):
        return None
    return (
        f"trainer.precision={precision} on a CPU without {' or '.join(BF16_CPU_FLAGS)} runs "
        "slower than 32-true (bf16 is emulated); use trainer.precision=32-true on this machine"
    )


def warn_if_bf16_emulated(precision: Any, accelerator: Any) -> str | None:
    """Log :func:`cpu_bf16_warning`'s message once, from the global-zero process; returns it."""
    from pytorch_lightning.utilities import rank_zero_only

    message = cpu_bf16_warning(precision, accelerator)
    if message is not None and rank_zero_only.rank == 0:
        log.warning("%s", message)
    return message

"""Keep freed host memory in the process, so a CPU training step does not fault it in again.

Every CPU training step allocates the same large buffers and frees them again: the bf16 copies
of the weights that autocast makes (248 MB at GPT-2 124M), the fp32 gradients (496 MB, freed by
``zero_grad(set_to_none=True)``), the activations. glibc's malloc serves any block above its
mmap threshold (at most 32 MB by default) with a fresh ``mmap`` and unmaps it on ``free``; below
that it returns the free top of the heap to the kernel (``trim``). Either way the next step's
buffer is new memory, which the kernel hands out page by page: a fault and a 4 KB zeroing per
page, hundreds of thousands per step, up to a second of system time, where the same memory could
simply be reused.

:func:`keep_freed_memory` raises both thresholds (``mallopt``), so big blocks come from the heap
and freed ones stay in it: after the first step, a step finds its buffers already mapped. The
price is that the process keeps its peak memory until it exits (its resident size no longer
shrinks after a big step), which is what a training process does anyway.

This is glibc's setting for the whole process (other C libraries: nothing happens). ``mallopt``
takes a C ``int``: a Python number above 2**31 - 1 would reach it cut to its low 32 bits (a
trim threshold of ``1 << 34`` is read as 0, "trim at every free", the opposite of the intent), so
the values are passed as ``ctypes.c_int``.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
TRIM_THRESHOLD = 2**31 - 1  # the largest int: never give the heap's free top back

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse; True where it took the settings (once a process)."""
    global _applied
    if _applied is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            _applied = bool(
                libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD))
                and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD))
            )
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
            _applied = False
    return _applied

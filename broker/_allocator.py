"""Keep glibc from mapping and unmapping memory around every large package.

glibc's malloc returns the free memory at the top of its heap to the kernel once it
exceeds ``M_TRIM_THRESHOLD``, and serves requests over ``M_MMAP_THRESHOLD`` with fresh
mappings (both 128 KiB until its dynamic adjustment kicks in, which depends on the
process's history). Sealing or opening a 64 KB view allocates and frees several buffers
of about 100 KB, so in a fresh process every call gave pages back and faulted them in
again: 80 to 120 minor faults, a third or more of a 64 KB seal.

Fixed thresholds (allocations up to 4 MiB from the heap, up to 8 MiB of free heap top
kept) remove those faults; a process keeps at most 8 MiB more than it uses. glibc's own
settings in the environment (``MALLOC_*_`` or ``GLIBC_TUNABLES``) win.
"""

from __future__ import annotations

import ctypes
import os
import platform

import structlog

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_heap_top"]

log = structlog.get_logger()

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024
# glibc malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OVERRIDES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_heap_top() -> bool:
    """Set glibc's thresholds; True when set (False off glibc, or when the environment
    sets them)."""
    if any(name in os.environ for name in _OVERRIDES) or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("allocator.thresholds", mmap=MMAP_THRESHOLD, trim=TRIM_THRESHOLD, set=done)
    return done

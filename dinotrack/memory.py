"""Give large freed buffers back to the operating system at once (glibc), so 4K frames do not pile up in the heap.

glibc serves a freed block of more than 128 KiB from its heap the next time,
raising its threshold for mapping blocks on their own up to 32 MiB. A 4K
frame (25 MB), freed by one thread after another made it, then stays in the
heap of the thread that made it; with frames decoded, resized, painted and
written on different threads, about 250 MB of such blocks were kept at
3840x2160. A fixed threshold maps every block from :data:`MMAP_THRESHOLD` on
by itself and unmaps it when freed.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 4 << 20
"""Blocks this large or larger are mapped on their own: a 854x480 frame (1.2 MB) stays in the heap."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process; whether it was set.

    Does nothing where the C library is not glibc, or where the user set
    ``MALLOC_MMAP_THRESHOLD_`` (glibc's own setting) themselves.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not _glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc's, found without a search
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def _glibc() -> bool:
    """Whether this process runs on glibc (which alone answers this setting)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        return False

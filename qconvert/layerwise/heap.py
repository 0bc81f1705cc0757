"""Keeping the process's memory at one layer's worth: freed layers go back to the OS.

glibc raises its mmap threshold each time a large block is freed, so after the first layer the
next layers' weights land on the heap, where freed space fragments and is not returned; resident
memory then grows by about a layer per layer. Fixing the threshold keeps every tensor of a MiB or
more in its own mapping, unmapped when freed; a trim after each layer returns the rest. Elsewhere
than glibc both are no-ops.
"""

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD = 1 << 20

try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallopt, _libc.malloc_trim  # noqa: B018 (both exist in glibc)
except (OSError, AttributeError):
    _libc = None


def map_large_blocks() -> None:
    if _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def return_freed_memory() -> None:
    if _libc is not None:
        _libc.malloc_trim(0)

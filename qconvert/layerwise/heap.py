"""Where glibc puts the layer-wise driver's large blocks: weights in their own mappings, activations
on the heap.

glibc raises its mmap threshold each time a large block is freed, so after the first layer the
next layers' weights land on the heap, where freed space fragments and is not returned; resident
memory then grows by about a layer per layer. Loading a layer's weights with the threshold fixed
at 1 MiB keeps each of its tensors in its own mapping, unmapped when the layer is released; a trim
after each layer returns the rest.

The calibration passes are the opposite case: thousands of activation-sized temporaries per layer
(a norm's float32 copy of a batch is 19 MiB on SmolLM2's shapes), each of which, mapped afresh,
page-faults in zeroed memory: a third of the driver's time went to the kernel. With the threshold
at glibc's largest (32 MiB on 64-bit) they reuse freed heap blocks instead, at the cost of some
resident memory while a layer runs. Elsewhere than glibc all of this is a no-op.
"""

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
WEIGHTS_THRESHOLD = 1 << 20
ACTIVATIONS_THRESHOLD = (4 << 20) * (8 if sys.maxsize > 2**32 else 4)  # glibc's DEFAULT_MMAP_THRESHOLD_MAX

try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallopt, _libc.malloc_trim  # noqa: B018 (both exist in glibc)
except (OSError, AttributeError):
    _libc = None


def map_large_blocks() -> None:
    """From now on every block of 1 MiB or more gets its own mapping: for loading weights."""
    if _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, WEIGHTS_THRESHOLD)


@contextmanager
def activations_on_heap() -> Iterator[None]:
    """Blocks below 32 MiB come from the heap inside: for the calibration passes, whose outputs are
    the only blocks that outlive them. (What an algorithm keeps, packed weights waiting for the
    writer, goes on being mapped: on the heap it would pin freed space under it, layer after layer.)"""
    if _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, ACTIVATIONS_THRESHOLD)
    try:
        yield
    finally:
        map_large_blocks()


def return_freed_memory() -> None:
    if _libc is not None:
        _libc.malloc_trim(0)

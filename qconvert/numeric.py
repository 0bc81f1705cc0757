"""Small numeric helpers that checkpoint readers and writers share, without the compiled extension:
reading or converting a checkpoint must not need `qconvert._native` (only quantizing does, in
quant/kernels.py)."""

import os

import numpy as np


def default_threads() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) → float32, exactly: bf16 is the top half of an fp32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)

"""Build the C extension qconvert._native from native/*.c (plain C, no torch)."""
from pathlib import Path

import numpy
from setuptools import Extension, setup

sources = sorted(str(p) for p in Path("native").glob("*.c"))
headers = sorted(str(p) for p in Path("native").glob("*.h"))  # a header change rebuilds too
setup(
    ext_modules=[
        Extension(
            "qconvert._native",
            sources=sources,
            depends=headers,
            include_dirs=[numpy.get_include(), "native"],
            # No -march=native and no FMA contraction: llama.cpp compiles its reference quantizers
            # (ggml-base) for the baseline ISA, and byte-identical output needs the same float ops.
            # quants_avx2.c and quants_avx512.c raise their own target by pragma and run only on a CPU
            # that has it (native/isa.h), so the extension still builds and runs anywhere.
            extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            extra_link_args=["-pthread"],
        )
    ]
)

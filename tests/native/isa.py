"""The quantizers' instruction-set paths (native/isa.h) for tests: run a block of a test on one path,
a path this CPU cannot run skipped with that reason."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from qconvert import _native

ALL_ISAS = ("scalar", "avx2", "avx512")


def require_isa(name: str) -> None:
    """Skip the test, saying why, unless this CPU runs path `name`."""
    if name not in _native.isas():
        pytest.skip(f"this CPU does not run the {name} path (it runs {', '.join(_native.isas())})")


@contextmanager
def forced_isa(name: str) -> Iterator[None]:
    """The quantizers forced onto path `name` inside the block, the start-up choice restored after."""
    require_isa(name)
    before = _native.isa()
    _native.set_isa(name)
    try:
        yield
    finally:
        _native.set_isa(before)

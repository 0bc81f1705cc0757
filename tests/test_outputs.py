"""Outputs appear whole or not at all, including on Ctrl-C."""

import pytest

from qconvert.errors import QConvertError
from qconvert.outputs import atomic_output


def test_output_appears_only_when_complete(tmp_path):
    out = tmp_path / "o.bin"
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"data")
        assert not out.exists()
    assert out.read_bytes() == b"data"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_nothing(tmp_path, exc):
    out = tmp_path / "o.bin"
    with pytest.raises(exc):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"partial")
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_file(tmp_path):
    out = tmp_path / "o.bin"
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out, force=True) as tmp:
            tmp.write_bytes(b"new, partial")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and list(tmp_path.iterdir()) == [out]


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "o.bin"
    out.write_bytes(b"old")
    with pytest.raises(QConvertError, match="--force"):
        with atomic_output(out):
            pass

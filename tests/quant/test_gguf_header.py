"""The quantize path's header writer (qconvert.quant.gguf_header) against gguf's GGUFWriter: the same
metadata entries (copied from a file, or set anew) and tensor infos give the same bytes."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from qconvert.gguf_read import read_gguf_header
from qconvert.quant.gguf_header import Metadata, gguf_header

ENTRIES = [
    ("general.name", "tiny ✓", GGUFValueType.STRING, None),
    ("x.empty", "", GGUFValueType.STRING, None),
    ("x.bool", True, GGUFValueType.BOOL, None),
    ("x.f32", 0.1, GGUFValueType.FLOAT32, None),
    ("x.i64", -(2**40), GGUFValueType.INT64, None),
    ("x.tokens", ["a", "", "ü" * 300], GGUFValueType.ARRAY, GGUFValueType.STRING),
    ("x.scores", [0.5, -1.0], GGUFValueType.ARRAY, GGUFValueType.FLOAT32),
    ("quantize.imatrix.file", "old", GGUFValueType.STRING, None),
]
# (name, numpy shape, type, data bytes): sizes that need padding, a 1-D and a 3-D tensor
TENSORS = [("a.weight", (3, 64), GGMLQuantizationType.Q8_0, 3 * 68), ("b.bias", (7,), GGMLQuantizationType.F32, 28), ("c", (2, 2, 256), GGMLQuantizationType.Q4_K, 4 * 144)]


def _gguf_writer_bytes(path, alignment: int) -> bytes:
    w = GGUFWriter(path, "llama")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    for key, value, vtype, sub_type in ENTRIES:
        w.add_key_value(key, value, vtype, sub_type=sub_type)
    w.add_uint32("general.file_type", 7)
    w.add_string("quantize.imatrix.file", "new.imatrix")  # replaced in place
    w.add_string("quantize.imatrix.dataset", "")  # not written
    for name, shape, ttype, n_bytes in TENSORS:
        w.add_tensor_info(name, shape, np.dtype(np.float32), n_bytes, raw_dtype=ttype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path.read_bytes()


@pytest.mark.parametrize("alignment", [32, 64])
def test_header_matches_gguf_writer(tmp_path, alignment):
    src = tmp_path / "src.gguf"
    w = GGUFWriter(src, "llama")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    for key, value, vtype, sub_type in ENTRIES:
        w.add_key_value(key, value, vtype, sub_type=sub_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()

    header = read_gguf_header(src)
    metadata = Metadata.copied(header, src)
    metadata.add_uint32("general.file_type", 7)
    metadata.add_string("quantize.imatrix.file", "new.imatrix")
    metadata.add_string("quantize.imatrix.dataset", "")
    head, offsets, size = gguf_header(metadata, TENSORS, header.alignment)

    expected = _gguf_writer_bytes(tmp_path / "expected.gguf", alignment)
    assert head[: len(expected)] == expected
    assert len(head) % alignment == 0 and set(head[len(expected) :]) <= {0}
    assert offsets[0] == len(head) and all(o % alignment == 0 for o in offsets)
    assert size == offsets[-1] + -(-TENSORS[-1][3] // alignment) * alignment

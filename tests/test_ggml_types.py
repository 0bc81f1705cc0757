"""qconvert.ggml_types, the quantize path's copy of the GGUF enums and block table, equals gguf's own."""

import gguf

from qconvert import ggml_types


def test_tensor_types_and_block_sizes_match_gguf():
    assert {t.name: t.value for t in ggml_types.GGMLQuantizationType} == {t.name: t.value for t in gguf.GGMLQuantizationType}
    ours = {t.name: sizes for t, sizes in ggml_types.GGML_QUANT_SIZES.items()}
    assert ours == {t.name: sizes for t, sizes in gguf.GGML_QUANT_SIZES.items()}


def test_value_types_match_gguf():
    assert {t.name: t.value for t in ggml_types.GGUFValueType} == {t.name: t.value for t in gguf.GGUFValueType}


def test_file_types_match_gguf():
    for ftype in ggml_types.LlamaFileType:
        assert gguf.LlamaFileType[ftype.name].value == ftype.value, ftype.name

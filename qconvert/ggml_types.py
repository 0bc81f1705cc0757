"""The GGUF format's enums and ggml's block table, as the quantize path needs them.

These numbers are fixed by the file format (ggml.h, gguf.h, llama.h); they are copied here so that
`qconvert quantize` does not import the `gguf` package, which costs a large part of a small model's
run. tests/test_ggml_types.py checks them against gguf's own, so they cannot drift.
"""

from enum import IntEnum


class GGMLQuantizationType(IntEnum):
    """ggml_type: a tensor's element type."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


class GGUFValueType(IntEnum):
    """gguf_type: a metadata value's type."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


class LlamaFileType(IntEnum):
    """llama_ftype: `general.file_type`, for the file types qconvert writes."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_BF16 = 32


_T = GGMLQuantizationType
# (values per block, bytes per block): ggml's type_traits (blck_size, type_size)
GGML_QUANT_SIZES: dict[GGMLQuantizationType, tuple[int, int]] = {
    _T.F32: (1, 4),
    _T.F16: (1, 2),
    _T.Q4_0: (32, 2 + 16),
    _T.Q4_1: (32, 2 + 2 + 16),
    _T.Q5_0: (32, 2 + 4 + 16),
    _T.Q5_1: (32, 2 + 2 + 4 + 16),
    _T.Q8_0: (32, 2 + 32),
    _T.Q8_1: (32, 4 + 4 + 32),
    _T.Q2_K: (256, 2 + 2 + 256 // 16 + 256 // 4),
    _T.Q3_K: (256, 2 + 256 // 4 + 256 // 8 + 12),
    _T.Q4_K: (256, 2 + 2 + 256 // 2 + 12),
    _T.Q5_K: (256, 2 + 2 + 256 // 2 + 256 // 8 + 12),
    _T.Q6_K: (256, 2 + 256 // 2 + 256 // 4 + 256 // 16),
    _T.Q8_K: (256, 4 + 256 + 256 // 8),
    _T.IQ2_XXS: (256, 2 + 256 // 4),
    _T.IQ2_XS: (256, 2 + 256 // 4 + 256 // 32),
    _T.IQ3_XXS: (256, 2 + 256 // 4 + 256 // 8),
    _T.IQ1_S: (256, 2 + 256 // 8 + 256 // 16),
    _T.IQ4_NL: (32, 2 + 16),
    _T.IQ3_S: (256, 2 + 256 // 4 + 256 // 8 + 256 // 32 + 4),
    _T.IQ2_S: (256, 2 + 256 // 4 + 256 // 16),
    _T.IQ4_XS: (256, 2 + 2 + 256 // 2 + 256 // 64),
    _T.I8: (1, 1),
    _T.I16: (1, 2),
    _T.I32: (1, 4),
    _T.I64: (1, 8),
    _T.F64: (1, 8),
    _T.IQ1_M: (256, 256 // 8 + 256 // 16 + 256 // 32),
    _T.BF16: (1, 2),
    _T.TQ1_0: (256, 2 + 4 * 13),
    _T.TQ2_0: (256, 2 + 64),
    _T.MXFP4: (32, 1 + 16),
    _T.NVFP4: (64, 4 + 32),
    _T.Q1_0: (128, 2 + 16),
}

"""llama.cpp file types (`--type`): the one table of what each means.

Each file type has its `general.file_type` id, the default block type of its 2-D weights, and
its mix: which tensor categories llama-quantize bumps to other types, and when. The rules are
those of the bundled llama.cpp (src/llama-quant.cpp, llama_tensor_get_type_impl), for the
architectures qconvert converts.

Mixture-of-experts tensors fall into the same categories by name (ffn_down_exps and ffn_down_shexp
are ffn_down, ffn_gate_exps ffn_gate, ...), so an expert tensor gets its dense counterpart's rule,
by the layer its name gives. What the expert count changes is in the mixes (attn_output with 8
experts) and in EIGHT_EXPERTS.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from qconvert.errors import QConvertError
from qconvert.ggml_types import GGMLQuantizationType as T
from qconvert.ggml_types import LlamaFileType as F


QUANTIZATION_VERSION = 2  # general.quantization_version: ggml's GGML_QNT_VERSION


class FileType(str, Enum):
    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    Q2_K = "q2_k"
    Q3_K_S = "q3_k_s"
    Q3_K_M = "q3_k_m"
    Q3_K_L = "q3_k_l"
    Q4_0 = "q4_0"
    Q4_1 = "q4_1"
    Q4_K_S = "q4_k_s"
    Q4_K_M = "q4_k_m"
    Q5_0 = "q5_0"
    Q5_1 = "q5_1"
    Q5_K_S = "q5_k_s"
    Q5_K_M = "q5_k_m"
    Q6_K = "q6_k"
    Q8_0 = "q8_0"


class Category(str, Enum):
    """llama-quantize's tensor categories (tensor_get_category), those that its mixes name."""

    OUTPUT = "output"
    TOKEN_EMBD = "token_embd"
    ATTN_V = "attn_v"
    ATTN_K = "attn_k"
    ATTN_Q = "attn_q"
    ATTN_OUTPUT = "attn_output"
    FFN_UP = "ffn_up"
    FFN_GATE = "ffn_gate"
    FFN_DOWN = "ffn_down"
    OTHER = "other"


@dataclass(frozen=True)
class LayerContext:
    """What a mix rule may look at: the tensor's layer, the layer count, the GQA factor, whether
    an importance matrix is given, and the model's routed-expert count (0: not an MoE model)."""

    layer: int
    n_layer: int
    n_gqa: int
    has_imatrix: bool = False
    n_expert: int = 0

    @property
    def eight_experts(self) -> bool:
        # llama.cpp's special case for Mixtral-8x7B-like models: exactly 8 experts
        return self.n_expert == 8

    @property
    def use_more_bits(self) -> bool:
        # llama.cpp's use_more_bits: the first and last eighth, and every third layer between
        i, n = self.layer, self.n_layer
        return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


Rule = Callable[[LayerContext], T | None]  # the bumped type, or None to keep the default


def always(t: T) -> Rule:
    return lambda c: t


def when(pred: Callable[[LayerContext], bool], t: T) -> Rule:
    return lambda c: t if pred(c) else None


@dataclass(frozen=True)
class FileTypeInfo:
    ftype: F  # general.file_type
    default: T  # block type of 2-D weights before mixing
    mix: dict[Category, Rule] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return self.default not in (T.F32, T.F16, T.BF16)


_MORE_BITS_Q6 = {
    Category.ATTN_V: when(lambda c: c.use_more_bits, T.Q6_K),
    Category.FFN_DOWN: when(lambda c: c.use_more_bits, T.Q6_K),
}
# With 8 experts, attn_output gets Q5_K in these types; in the others no bump at all (Q3_K_L's Q5_K
# included): llama-quantize's 8-expert branch replaces the dense one.
_EIGHT_EXPERTS_Q5 = when(lambda c: c.eight_experts, T.Q5_K)

FILE_TYPES: dict[FileType, FileTypeInfo] = {
    FileType.F32: FileTypeInfo(F.ALL_F32, T.F32),
    FileType.F16: FileTypeInfo(F.MOSTLY_F16, T.F16),
    FileType.BF16: FileTypeInfo(F.MOSTLY_BF16, T.BF16),
    # With an imatrix, llama-quantize guards the first eighth of ffn_down with a minimum (Q4_1/Q5_1).
    FileType.Q4_0: FileTypeInfo(F.MOSTLY_Q4_0, T.Q4_0, {Category.FFN_DOWN: when(lambda c: c.has_imatrix and c.layer < c.n_layer // 8, T.Q4_1)}),
    FileType.Q4_1: FileTypeInfo(F.MOSTLY_Q4_1, T.Q4_1),
    FileType.Q5_0: FileTypeInfo(F.MOSTLY_Q5_0, T.Q5_0, {Category.FFN_DOWN: when(lambda c: c.has_imatrix and c.layer < c.n_layer // 8, T.Q5_1)}),
    FileType.Q5_1: FileTypeInfo(F.MOSTLY_Q5_1, T.Q5_1),
    FileType.Q8_0: FileTypeInfo(F.MOSTLY_Q8_0, T.Q8_0),
    FileType.Q2_K: FileTypeInfo(
        F.MOSTLY_Q2_K,
        T.Q2_K,
        {
            Category.ATTN_V: lambda c: T.Q4_K if c.n_gqa >= 4 else T.Q3_K,
            Category.FFN_DOWN: always(T.Q3_K),
            Category.ATTN_OUTPUT: lambda c: T.Q5_K if c.eight_experts else T.Q3_K,
        },
    ),
    FileType.Q3_K_S: FileTypeInfo(F.MOSTLY_Q3_K_S, T.Q3_K, {Category.ATTN_OUTPUT: _EIGHT_EXPERTS_Q5}),
    FileType.Q3_K_M: FileTypeInfo(
        F.MOSTLY_Q3_K_M,
        T.Q3_K,
        {
            Category.ATTN_V: lambda c: T.Q5_K if c.layer < 2 else T.Q4_K,
            Category.FFN_DOWN: lambda c: T.Q5_K if c.layer < c.n_layer // 16 else T.Q4_K,
            Category.ATTN_OUTPUT: lambda c: T.Q5_K if c.eight_experts else T.Q4_K,
        },
    ),
    FileType.Q3_K_L: FileTypeInfo(
        F.MOSTLY_Q3_K_L,
        T.Q3_K,
        {Category.ATTN_V: always(T.Q5_K), Category.FFN_DOWN: always(T.Q5_K), Category.ATTN_OUTPUT: when(lambda c: not c.eight_experts, T.Q5_K)},
    ),
    FileType.Q4_K_S: FileTypeInfo(
        F.MOSTLY_Q4_K_S,
        T.Q4_K,
        {
            Category.ATTN_V: when(lambda c: c.layer < 4, T.Q5_K),
            Category.FFN_DOWN: when(lambda c: c.layer < c.n_layer // 8, T.Q5_K),
            Category.ATTN_OUTPUT: _EIGHT_EXPERTS_Q5,
        },
    ),
    FileType.Q4_K_M: FileTypeInfo(F.MOSTLY_Q4_K_M, T.Q4_K, {**_MORE_BITS_Q6, Category.ATTN_OUTPUT: _EIGHT_EXPERTS_Q5}),
    FileType.Q5_K_S: FileTypeInfo(F.MOSTLY_Q5_K_S, T.Q5_K),
    FileType.Q5_K_M: FileTypeInfo(F.MOSTLY_Q5_K_M, T.Q5_K, _MORE_BITS_Q6),
    FileType.Q6_K: FileTypeInfo(F.MOSTLY_Q6_K, T.Q6_K),
}

# With exactly 8 experts, llama-quantize gives attn_v and attn_k Q8_0 in every file type, over the
# mix (and over the 70B bump), before the fallback.
EIGHT_EXPERTS = {Category.ATTN_V: T.Q8_0, Category.ATTN_K: T.Q8_0}

# A block type that does not fit a row length falls back to one with 32-element blocks
# (tensor_type_fallback); if that does not fit either, to F16.
FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


def parse_file_type(text: str, where: str = "--type") -> FileType:
    try:
        return FileType(text.lower())
    except ValueError:
        raise QConvertError(f"unknown type {text!r}", where, f"choose one of: {', '.join(t.value for t in FileType)}") from None

"""Which GGUF type each tensor gets in a file of a given type, as llama-quantize decides it."""

import re
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from qconvert.quant.file_types import FALLBACK, FILE_TYPES, Category, FileType, LayerContext

_LAYER = re.compile(r"^blk\.(\d+)\.")
# Substring → category, checked in llama-quantize's order (tensor_get_category).
_CATEGORY_BY_SUBSTRING = [
    ("attn_v.weight", Category.ATTN_V),
    ("attn_k.weight", Category.ATTN_K),
    ("attn_q.weight", Category.ATTN_Q),
    ("attn_output.weight", Category.ATTN_OUTPUT),
    ("ffn_up", Category.FFN_UP),
    ("ffn_gate", Category.FFN_GATE),
    ("ffn_down", Category.FFN_DOWN),
]


@dataclass(frozen=True)
class ModelShape:
    """The model facts the type rules use."""

    arch: str  # general.architecture
    n_layer: int
    n_head: int
    n_head_kv: int
    tied_embeddings: bool  # no output.weight: token_embd doubles as the output matrix

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv

    @property
    def is_70b(self) -> bool:
        # llama.cpp's LLM_TYPE_70B: 80 layers for qwen2; for llama also GQA (without it, 65B)
        return self.n_layer == 80 and (self.arch == "qwen2" or self.n_head != self.n_head_kv)


def category(name: str) -> Category:
    if name == "output.weight":
        return Category.OUTPUT
    if name == "token_embd.weight":
        return Category.TOKEN_EMBD
    return next((cat for sub, cat in _CATEGORY_BY_SUBSTRING if sub in name), Category.OTHER)


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """2-D weights other than norms (tensor_allows_quantization, for dense Qwen2/Llama tensors)."""
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name


def block_size(t: T) -> int:
    return GGML_QUANT_SIZES[t][0]


def _fallback(t: T, n_per_row: int) -> T:
    if n_per_row % block_size(t) == 0:
        return t
    t = FALLBACK.get(t, t)
    return t if n_per_row % block_size(t) == 0 else T.F16


def tensor_type(name: str, shape: tuple[int, ...], source: T, file_type: FileType, model: ModelShape, has_imatrix: bool = False) -> T:
    """The type of tensor `name` (numpy `shape`, stored as `source`) in a `file_type` file,
    quantized with or without an importance matrix."""
    if not allows_quantization(name, shape):
        return source
    info = FILE_TYPES[file_type]
    if not info.quantized:
        return info.default
    n_per_row = shape[-1]
    cat = category(name)
    new = info.default
    if cat == Category.OUTPUT or (cat == Category.TOKEN_EMBD and model.tied_embeddings):
        if n_per_row % block_size(new) != 0:
            new = T.Q8_0
        elif new != T.Q8_0:
            new = T.Q6_K
    elif cat in info.mix:
        m = _LAYER.match(name)
        layer = int(m.group(1)) if m else 0
        new = info.mix[cat](LayerContext(layer, model.n_layer, model.n_gqa, has_imatrix)) or new
    if cat == Category.ATTN_V and model.is_70b and new in (T.Q3_K, T.Q4_K):
        new = T.Q5_K
    return _fallback(new, n_per_row)

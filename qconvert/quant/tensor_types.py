"""Which GGUF type each tensor gets in a file of a given type, as llama-quantize decides it."""

import re
from dataclasses import dataclass

from qconvert.ggml_types import GGML_QUANT_SIZES
from qconvert.ggml_types import GGMLQuantizationType as T
from qconvert.quant.file_types import EIGHT_EXPERTS, FALLBACK, FILE_TYPES, Category, FileType, LayerContext

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
# Name substrings of weights llama-quantize never quantizes (tensor_allows_quantization), for the
# architectures qconvert converts: norms, and the MoE routers (ffn_gate_inp; Qwen2-MoE's
# ffn_gate_inp_shexp is kept by its shape, a single row).
_NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight")
# llama.cpp's model type LLM_TYPE_70B, which bumps attn_v: per architecture, from the model shape.
_IS_70B = {
    "qwen2": lambda m: m.n_layer == 80,
    "llama": lambda m: m.n_layer == 80 and m.n_head != m.n_head_kv and m.n_expert != 8,  # equal heads: 65B; 8 experts: Mixtral types
}


@dataclass(frozen=True)
class ModelShape:
    """The model facts the type rules use."""

    arch: str  # general.architecture
    n_layer: int
    n_head: int
    n_head_kv: int
    tied_embeddings: bool  # no output.weight: token_embd doubles as the output matrix
    n_expert: int = 0  # {arch}.expert_count: routed experts per layer, 0 for a dense model

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv

    @property
    def is_70b(self) -> bool:
        return _IS_70B.get(self.arch, lambda m: False)(self)


def category(name: str) -> Category:
    if name == "output.weight":
        return Category.OUTPUT
    if name == "token_embd.weight":
        return Category.TOKEN_EMBD
    return next((cat for sub, cat in _CATEGORY_BY_SUBSTRING if sub in name), Category.OTHER)


def ggml_n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims of a tensor of numpy `shape`: its dimensions less the trailing ne of 1 (the
    leading numpy axes of 1), at least 1. A (1, n) tensor is 1-D to llama-quantize."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return max(1, len(dims))


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """2-D and 3-D (stacked experts) weights other than norms and routers (tensor_allows_quantization)."""
    return ggml_n_dims(shape) >= 2 and name.endswith("weight") and not any(s in name for s in _NEVER_QUANTIZED)


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
        # The layer its name gives: llama-quantize parses it there for an MoE model (n_expert > 1, so
        # ffn_down_exps and ffn_down_shexp of one layer share it) and otherwise counts the tensors of
        # the category in file order, the same thing with one per layer.
        m = _LAYER.match(name)
        layer = int(m.group(1)) if m else 0
        new = info.mix[cat](LayerContext(layer, model.n_layer, model.n_gqa, has_imatrix, model.n_expert)) or new
    if cat == Category.ATTN_V and model.is_70b and new in (T.Q3_K, T.Q4_K):
        new = T.Q5_K
    if model.n_expert == 8 and cat in EIGHT_EXPERTS:
        new = EIGHT_EXPERTS[cat]
    return _fallback(new, n_per_row)

"""Per-architecture knowledge as data: which HF architectures convert, the tensor name map, and the
decoder block's linears as the layer-by-layer quantizers (GPTQ, AWQ, imatrix) see them.

Qwen2 and Llama share llama.cpp's tensor names and their decoder block; they differ only in the
flags of ArchSpec.
"""

import re
from dataclasses import dataclass

from qconvert.errors import QConvertError


@dataclass(frozen=True)
class ScalingGroup:
    """One of AWQ's scaling groups: per-input-channel scales multiply `linears` (which read the
    same input) and divide `prev`, the norm or linear whose output that input is; the scales are
    searched by running `inspect` (the smallest module containing the linears) on the input.
    With `prev` a linear, the group applies only where prev's output width equals the linears'
    input width (AutoAWQ skips v → o under GQA that way)."""

    prev: str
    linears: tuple[str, ...]
    inspect: str


@dataclass(frozen=True)
class DecoderBlock:
    """The quantizable linears of one decoder layer, by their names inside the layer module.

    `sequential` is the sub-layer order of GPTQ's true-sequential mode (AutoGPTQ's
    inside_layer_modules): each group's inputs are captured after the groups before it are
    quantized. Linears in one group read the same input, so they share one Hessian.
    `scaling` is AWQ's scaling groups, in AutoAWQ's order; `no_clip` the linears whose weights
    AWQ does not clip (attention scores are too sensitive to q and k).
    """

    layers_path: str  # where the decoder layers sit in the HF module tree and the checkpoint
    sequential: tuple[tuple[str, ...], ...]
    scaling: tuple[ScalingGroup, ...] = ()
    no_clip: tuple[str, ...] = ()

    @property
    def linears(self) -> tuple[str, ...]:
        return tuple(name for group in self.sequential for name in group)


LLAMA_BLOCK = DecoderBlock(
    layers_path="model.layers",
    sequential=(
        ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"),
        ("self_attn.o_proj",),
        ("mlp.up_proj", "mlp.gate_proj"),
        ("mlp.down_proj",),
    ),
    scaling=(
        ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
        ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),
        ScalingGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
        ScalingGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
)


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # general.architecture in llama.cpp
    permute_qk: bool  # HF rotate-half RoPE → llama.cpp's interleaved (NORM) RoPE layout
    write_vocab_size: bool  # llama.cpp reads {arch}.vocab_size for llama
    write_rope_dims: bool  # {arch}.rope.dimension_count
    block: DecoderBlock = LLAMA_BLOCK


ARCHITECTURES = {
    "Qwen2ForCausalLM": ArchSpec("qwen2", permute_qk=False, write_vocab_size=False, write_rope_dims=False),
    "LlamaForCausalLM": ArchSpec("llama", permute_qk=True, write_vocab_size=True, write_rope_dims=True),
}

# HF tensor name → GGUF tensor name. Layer-level names are relative to "model.layers.{i}.".
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.o_proj.bias": "attn_output.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
# Buffers some checkpoints carry that llama.cpp recomputes itself.
SKIPPED_TENSORS = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def arch_spec(architecture: str, where: object) -> ArchSpec:
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        raise QConvertError(
            f"unsupported architecture {architecture}", where, f"qconvert converts {', '.join(ARCHITECTURES)}"
        ) from None


def gguf_tensor_name(hf_name: str) -> str | None:
    """The GGUF name of an HF tensor; None for a buffer to skip. Raises on a tensor we do not know."""
    if SKIPPED_TENSORS.match(hf_name):
        return None
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    m = _LAYER.match(hf_name)
    if m and m.group(2) in LAYER_TENSORS:
        return f"blk.{m.group(1)}.{LAYER_TENSORS[m.group(2)]}"
    raise QConvertError(f"unexpected tensor {hf_name!r}", "checkpoint", "this checkpoint has parts qconvert cannot map to llama.cpp")


def permute_for_rope(w, n_heads: int):
    """Reorder Q/K rows (and biases) from HF's rotate-half RoPE to llama.cpp's pairwise layout.

    Within each head, rows [0..d/2) and [d/2..d) become interleaved pairs, as convert_hf_to_gguf's
    LlamaModel.permute does. w: (n_heads*head_dim, ...) → same shape.
    """
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

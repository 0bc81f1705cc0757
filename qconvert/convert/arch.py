"""Per-architecture knowledge as data: which HF architectures convert, the tensor name map, and the
decoder block's linears as the layer-by-layer quantizers (GPTQ, AWQ, imatrix) see them.

Qwen2, Qwen3, Llama and Mistral share llama.cpp's tensor names and their decoder block; they
differ only in the flags of ArchSpec (Qwen3 adds per-head q/k norms, which are not linears).
Qwen2-MoE and Qwen3-MoE replace the MLP with a router and routed experts (Qwen2-MoE also a
shared expert); llama.cpp stacks each layer's experts into one 3-D tensor per projection.
"""

import re
from dataclasses import dataclass, replace

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


EXPERT = "{e}"  # in a linear's name: one group per routed expert (each reads its own tokens)
ALL_EXPERTS = "*"  # in a scaling group's linears: every routed expert's, in one group

Group = tuple[str, ...]


@dataclass(frozen=True)
class DecoderBlock:
    """The quantizable linears of one decoder layer, by their names inside the layer module.

    `sequential` is the sub-layer order of GPTQ's true-sequential mode (AutoGPTQ's
    inside_layer_modules): each group's inputs are captured after the groups before it are
    quantized. Linears in one group read the same input, so they share one Hessian. A group
    naming EXPERT stands for one group per routed expert, all in one stage (one pass).
    `scaling` is AWQ's scaling groups, in AutoAWQ's order; `no_clip` the linears whose weights
    AWQ does not clip (attention scores are too sensitive to q and k). The templates are written
    out for a model by `for_experts`.
    """

    layers_path: str  # where the decoder layers sit in the HF module tree and the checkpoint
    sequential: tuple[Group, ...]
    scaling: tuple[ScalingGroup, ...] = ()
    no_clip: tuple[str, ...] = ()
    n_experts: int = 0  # routed experts per layer, once written out

    def for_experts(self, n_experts: int) -> "DecoderBlock":
        return replace(self, n_experts=n_experts)

    def _each(self, group: Group) -> tuple[Group, ...]:
        if not any(EXPERT in name for name in group):
            return (group,)
        return tuple(tuple(name.replace(EXPERT, str(e)) for name in group) for e in range(self.n_experts))

    def _all(self, names: Group) -> Group:
        return tuple(n for name in names for n in ([name.replace(ALL_EXPERTS, str(e)) for e in range(self.n_experts)] if ALL_EXPERTS in name else [name]))

    @property
    def stages(self) -> tuple[tuple[Group, ...], ...]:
        """GPTQ's true-sequential stages: each template group, written out."""
        return tuple(self._each(group) for group in self.sequential)

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(group for stage in self.stages for group in stage)

    @property
    def linears(self) -> tuple[str, ...]:
        return tuple(name for group in self.groups for name in group)

    @property
    def scaling_groups(self) -> tuple[ScalingGroup, ...]:
        out = []
        for g in self.scaling:
            if EXPERT in g.prev:
                out += [ScalingGroup(g.prev.replace(EXPERT, str(e)), tuple(n.replace(EXPERT, str(e)) for n in g.linears), g.inspect.replace(EXPERT, str(e))) for e in range(self.n_experts)]
            else:
                out.append(ScalingGroup(g.prev, self._all(g.linears), g.inspect))
        return tuple(out)


ATTENTION_GROUPS = (("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"), ("self_attn.o_proj",))
ATTENTION_SCALING = (
    ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
    ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),
)
LLAMA_BLOCK = DecoderBlock(
    layers_path="model.layers",
    sequential=(*ATTENTION_GROUPS, ("mlp.up_proj", "mlp.gate_proj"), ("mlp.down_proj",)),
    scaling=(
        *ATTENTION_SCALING,
        ScalingGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
        ScalingGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
)
# Qwen3-MoE: routed experts only; the router (mlp.gate) stays unquantized, as in GPTQModel and AutoAWQ.
# AWQ scales every expert's gate/up from the MoE block's input together, and each expert's down
# from its own up.
MOE_BLOCK = DecoderBlock(
    layers_path="model.layers",
    sequential=(*ATTENTION_GROUPS, ("mlp.experts.{e}.up_proj", "mlp.experts.{e}.gate_proj"), ("mlp.experts.{e}.down_proj",)),
    scaling=(
        *ATTENTION_SCALING,
        ScalingGroup("post_attention_layernorm", ("mlp.experts.*.gate_proj", "mlp.experts.*.up_proj"), "mlp"),
        ScalingGroup("mlp.experts.{e}.up_proj", ("mlp.experts.{e}.down_proj",), "mlp.experts.{e}.down_proj"),
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
)
# Qwen2-MoE adds a shared expert that reads every token (its 1-wide gate stays unquantized).
SHARED_EXPERT_MOE_BLOCK = DecoderBlock(
    layers_path="model.layers",
    sequential=(
        *ATTENTION_GROUPS,
        ("mlp.shared_expert.up_proj", "mlp.shared_expert.gate_proj"),
        ("mlp.experts.{e}.up_proj", "mlp.experts.{e}.gate_proj"),
        ("mlp.shared_expert.down_proj",),
        ("mlp.experts.{e}.down_proj",),
    ),
    scaling=(
        *ATTENTION_SCALING,
        ScalingGroup("post_attention_layernorm", ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj", "mlp.experts.*.gate_proj", "mlp.experts.*.up_proj"), "mlp"),
        ScalingGroup("mlp.shared_expert.up_proj", ("mlp.shared_expert.down_proj",), "mlp.shared_expert.down_proj"),
        ScalingGroup("mlp.experts.{e}.up_proj", ("mlp.experts.{e}.down_proj",), "mlp.experts.{e}.down_proj"),
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
)


@dataclass(frozen=True)
class Experts:
    """What llama.cpp's graph of an MoE architecture fixes that config.json may say otherwise."""

    renormalizes_top_k: bool  # llama.cpp rescales the chosen experts' weights to sum 1 (HF: norm_topk_prob)
    shared_expert: bool = False  # Qwen2-MoE: an always-on expert, scaled by sigmoid(shared_expert_gate)


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # general.architecture in llama.cpp
    permute_qk: bool  # HF rotate-half RoPE → llama.cpp's interleaved (NORM) RoPE layout
    write_vocab_size: bool  # llama.cpp reads {arch}.vocab_size for llama
    write_rope_dims: bool  # {arch}.rope.dimension_count
    block: DecoderBlock = LLAMA_BLOCK
    moe: Experts | None = None  # a mixture-of-experts architecture: every layer's MLP is routed experts


QWEN2 = ArchSpec("qwen2", permute_qk=False, write_vocab_size=False, write_rope_dims=False)
LLAMA = ArchSpec("llama", permute_qk=True, write_vocab_size=True, write_rope_dims=True)
ARCHITECTURES = {
    "Qwen2ForCausalLM": QWEN2,
    "Qwen3ForCausalLM": ArchSpec("qwen3", permute_qk=False, write_vocab_size=False, write_rope_dims=False),
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": LLAMA,  # llama.cpp converts it as llama; its sliding window is not written
    "Qwen2MoeForCausalLM": ArchSpec(
        "qwen2moe", permute_qk=False, write_vocab_size=False, write_rope_dims=False, block=SHARED_EXPERT_MOE_BLOCK,
        moe=Experts(renormalizes_top_k=False, shared_expert=True),
    ),
    "Qwen3MoeForCausalLM": ArchSpec("qwen3moe", permute_qk=False, write_vocab_size=False, write_rope_dims=False, block=MOE_BLOCK, moe=Experts(renormalizes_top_k=True)),
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
    "self_attn.q_norm.weight": "attn_q_norm.weight",  # Qwen3: RMSNorm per head of q and k
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    # Mixture of experts: the router, and Qwen2-MoE's shared expert with its 1-row gate.
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
}
DENSE_FFN = ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")  # an MoE architecture's layers have none
MOE_ONLY = ("ffn_gate_inp.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight", "ffn_gate_inp_shexp.weight")
# Routed experts: llama.cpp stacks each layer's experts of one projection into one 3-D tensor,
# numpy shape (n_expert, rows, row_len), expert e's matrix at [e].
EXPERT_TENSORS = {"gate_proj": "ffn_gate_exps.weight", "up_proj": "ffn_up_exps.weight", "down_proj": "ffn_down_exps.weight"}
# As checkpoints on the hub and transformers' save_pretrained store them: one 2-D tensor per expert...
_PER_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
# ...or as transformers 5 holds them in memory: every expert in one 3-D tensor, gate_up_proj
# (n_expert, 2 × ffn, hidden) with gate's rows first in each expert, down_proj (n_expert, hidden, ffn).
_FUSED_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(?:\.weight)?$")
FUSED_GATE_UP = "gate_up_proj"
# Tensors convert_hf_to_gguf.py keeps in F32 whatever the output type: the routers, which
# llama-quantize does not quantize either.
F32_TENSORS = ("ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight")
# Buffers some checkpoints carry that llama.cpp recomputes itself.
SKIPPED_TENSORS = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class ExpertTensor:
    """A checkpoint tensor holding routed experts: one expert's projection (`expert` its index), or
    every expert's (`expert` None) of `proj`, a key of EXPERT_TENSORS or FUSED_GATE_UP."""

    layer: int
    expert: int | None
    proj: str


def expert_tensor(hf_name: str) -> ExpertTensor | None:
    """The routed-expert tensor `hf_name` is, or None for any other tensor."""
    if m := _PER_EXPERT.match(hf_name):
        return ExpertTensor(int(m.group(1)), int(m.group(2)), m.group(3))
    if m := _FUSED_EXPERTS.match(hf_name):
        return ExpertTensor(int(m.group(1)), None, m.group(2))
    return None


def layer_tensor(linear: str) -> tuple[str, int | None]:
    """A decoder layer's linear, named inside the layer → its GGUF tensor (less "blk.N.") and, for
    a routed expert, its index in that stacked tensor."""
    found = expert_tensor(f"model.layers.0.{linear}.weight")
    if found is not None and found.expert is not None:
        return EXPERT_TENSORS[found.proj], found.expert
    return LAYER_TENSORS[f"{linear}.weight"], None


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

"""Stream a Hugging Face checkpoint into a GGUF file, one tensor in memory at a time.

First every tensor is planned from the safetensors headers alone (name, shape, output type), so the
GGUF header and tensor table can be written before any data; then each tensor is read, converted
and written in turn. Peak memory is one tensor, not the model.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from tqdm import tqdm

from qconvert.convert.arch import ArchSpec, arch_spec, gguf_tensor_name, permute_for_rope
from qconvert.convert.out_types import OUT_TYPES, OutType, encode
from qconvert.convert.rope import llama3_rope_factors, rope_kind, write_rope_scaling
from qconvert.errors import QConvertError
from qconvert.hf.config import ModelConfig
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.hf.tokenizer import GGUFVocab, load_gguf_vocab
from qconvert.outputs import atomic_output, check_output_path

log = logging.getLogger(__name__)

QUANTIZATION_VERSION = 2  # general.quantization_version, as llama.cpp writes it


@dataclass(frozen=True)
class ConvertOptions:
    out_type: OutType = OutType.F16
    force: bool = False
    progress: bool = True


@dataclass(frozen=True, eq=False)
class PlannedTensor:
    hf_name: str | None  # None: a tensor computed here (`values`), not read from the checkpoint
    gguf_name: str
    shape: tuple[int, ...]  # numpy (row-major) shape, as in the checkpoint
    ggml_type: GGMLQuantizationType
    permute_heads: int = 0  # >0: apply the RoPE Q/K permutation with this many heads
    values: np.ndarray | None = None


def _keeps_f32(gguf_name: str, shape: tuple[int, ...]) -> bool:
    """Norms, biases and other 1-D tensors stay F32, as llama.cpp expects."""
    return len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight")


def _sort_key(gguf_name: str) -> tuple:
    # rope_freqs and token_embd first, then layers in order, then output_norm and output
    if gguf_name.startswith("blk."):
        _, layer, rest = gguf_name.split(".", 2)
        return (1, int(layer), rest)
    return (0 if gguf_name.startswith(("rope_freqs", "token_embd")) else 2, 0, gguf_name)


def plan_tensors(ckpt: SafetensorsCheckpoint, config: ModelConfig, spec: ArchSpec, out_type: OutType) -> list[PlannedTensor]:
    weight_type = OUT_TYPES[out_type].tensor_type
    plan = []
    for hf_name, entry in ckpt.entries.items():
        name = gguf_tensor_name(hf_name)
        if name is None or (name == "output.weight" and config.tie_word_embeddings):
            continue  # tied: llama.cpp reuses token_embd as the output matrix
        heads = 0
        if spec.permute_qk:  # blk.N.attn_q.weight → attn_q
            heads = {"attn_q": config.num_heads, "attn_k": config.num_kv_heads}.get(name.split(".")[-2], 0)
        ggml_type = GGMLQuantizationType.F32 if _keeps_f32(name, entry.shape) else weight_type
        plan.append(PlannedTensor(hf_name, name, entry.shape, ggml_type, heads))
    if config.rope_scaling and rope_kind(config.rope_scaling) == "llama3":
        factors = llama3_rope_factors(config.rope_scaling, config.head_dim, config.rope_theta)
        plan.append(PlannedTensor(None, "rope_freqs.weight", factors.shape, GGMLQuantizationType.F32, values=factors))
    names = {t.gguf_name for t in plan}
    if "token_embd.weight" not in names:
        raise QConvertError("checkpoint has no model.embed_tokens.weight", "checkpoint", "is this a causal LM checkpoint?")
    embd = next(t for t in plan if t.gguf_name == "token_embd.weight")
    if embd.shape != (config.vocab_size, config.hidden_size):
        raise QConvertError(
            f"embedding shape {embd.shape} does not match config.json (vocab_size {config.vocab_size}, hidden_size {config.hidden_size})",
            "checkpoint",
        )
    return sorted(plan, key=lambda t: _sort_key(t.gguf_name))


def _write_hparams(w: GGUFWriter, config: ModelConfig, spec: ArchSpec, out_type: OutType, name: str) -> None:
    w.add_type("model")
    w.add_name(name)
    w.add_block_count(config.num_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    if config.head_dim != config.hidden_size // config.num_heads:
        w.add_key_length(config.head_dim)
        w.add_value_length(config.head_dim)
    if spec.write_vocab_size:
        w.add_vocab_size(config.vocab_size)
    if spec.write_rope_dims:
        w.add_rope_dimension_count(config.head_dim)
    if config.rope_scaling:
        write_rope_scaling(w, config.rope_scaling)
    w.add_file_type(OUT_TYPES[out_type].file_type)
    w.add_quantization_version(QUANTIZATION_VERSION)


def _write_vocab(w: GGUFWriter, vocab: GGUFVocab) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.token_types)
    w.add_token_merges(vocab.merges)
    setters = {"bos": w.add_bos_token_id, "eos": w.add_eos_token_id, "unk": w.add_unk_token_id, "pad": w.add_pad_token_id}
    for key, token_id in vocab.special_ids.items():
        setters[key](token_id)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        w.add_chat_template(vocab.chat_template)


def _tensor_data(ckpt: SafetensorsCheckpoint, t: PlannedTensor) -> np.ndarray:
    values = t.values if t.hf_name is None else ckpt.load(t.hf_name)
    if t.permute_heads:
        values = permute_for_rope(values, t.permute_heads)
    if values.dtype != np.float32 and t.ggml_type != GGMLQuantizationType.F16:
        values = values.astype(np.float32)
    return encode(values, t.ggml_type)


def _add_tensor_info(w: GGUFWriter, t: PlannedTensor) -> None:
    n = int(np.prod(t.shape))
    if t.ggml_type == GGMLQuantizationType.F32:
        w.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float32), n * 4)
    elif t.ggml_type == GGMLQuantizationType.F16:
        w.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float16), n * 2)
    else:  # BF16 travels as raw bytes: (rows, 2*cols) uint8
        w.add_tensor_info(t.gguf_name, (*t.shape[:-1], t.shape[-1] * 2), np.dtype(np.uint8), n * 2, raw_dtype=t.ggml_type)


def convert_hf_to_gguf(model_dir: Path, out_path: Path, options: ConvertOptions = ConvertOptions()) -> Path:
    """Convert the HF checkpoint in `model_dir` to the GGUF file `out_path`; returns `out_path`."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    check_output_path(out_path, options.force)
    config = ModelConfig.from_dir(model_dir)
    spec = arch_spec(config.architecture, model_dir / "config.json")
    vocab = load_gguf_vocab(model_dir, config.vocab_size, config.raw)
    ckpt = SafetensorsCheckpoint.open(model_dir)
    plan = plan_tensors(ckpt, config, spec, options.out_type)

    with atomic_output(out_path, options.force) as tmp:
        w = GGUFWriter(tmp, spec.gguf_arch)
        try:
            _write_hparams(w, config, spec, options.out_type, model_dir.name)
            _write_vocab(w, vocab)
            for t in plan:
                _add_tensor_info(w, t)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            for t in tqdm(plan, desc=f"writing {out_path.name}", unit="tensor", disable=not options.progress):
                w.write_tensor_data(_tensor_data(ckpt, t))
        finally:
            w.close()
    log.info("wrote %s (%d tensors)", out_path, len(plan))
    return out_path

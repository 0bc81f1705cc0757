"""Stream a Hugging Face checkpoint into a GGUF file of any llama.cpp type, one slab of rows at a time.

Every tensor is first planned from the safetensors headers alone (GGUF name, shape, type by
llama-quantize's rules), so the GGUF header and tensor table are written before any data; then
each tensor is read in row slabs, converted or quantized, and appended. Peak memory is a slab, not
the model, and no intermediate f16 file is written.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from qconvert.calib.types import CalibInput
from qconvert.convert.arch import ArchSpec, arch_spec, gguf_tensor_name, permute_for_rope
from qconvert.convert.rope import llama3_rope_factors, rope_kind, write_rope_scaling
from qconvert.errors import QConvertError
from qconvert.gguf_stream import TensorSource, write_gguf
from qconvert.hf.config import ModelConfig
from qconvert.hf.dequantized import Checkpoint, open_checkpoint
from qconvert.hf.tokenizer import GGUFVocab, load_gguf_vocab
from qconvert.imatrix.file import ImportanceMatrix, read_imatrix, write_imatrix
from qconvert.numeric import default_threads
from qconvert.outputs import atomic_output, check_output_path
from qconvert.quant.file_types import FILE_TYPES, QUANTIZATION_VERSION, FileType
from qconvert.quant.importance import attach_importance, write_imatrix_metadata
from qconvert.quant.tensor_types import ModelShape, tensor_type

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ConvertOptions:
    file_type: FileType = FileType.F16
    force: bool = False
    progress: bool = True
    threads: int | None = None
    imatrix: Path | None = None  # an importance matrix file to quantize with (GGUF or legacy .dat)
    calib: CalibInput | None = None  # or: compute the importance matrix in-line from this calibration set
    imatrix_out: Path | None = None  # where to keep the in-line matrix (not written unless asked)
    device: str = "cpu"  # of the in-line computation
    compute_dtype: str = "auto"


def _keeps_f32(gguf_name: str, shape: tuple[int, ...]) -> bool:
    """Norms, biases and other 1-D tensors stay F32, as llama.cpp expects."""
    return len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight")


def _sort_key(gguf_name: str) -> tuple:
    # rope_freqs and token_embd first, then layers in order, then output_norm and output
    if gguf_name.startswith("blk."):
        _, layer, rest = gguf_name.split(".", 2)
        return (1, int(layer), rest)
    return (0 if gguf_name.startswith(("rope_freqs", "token_embd")) else 2, 0, gguf_name)


def _constant_rows(values: np.ndarray, start: int, end: int) -> np.ndarray:
    return values.reshape(-1, values.shape[-1])[start:end]


def _row_reader(ckpt: Checkpoint, hf_name: str, shape: tuple[int, ...], heads: int) -> Callable[[int, int], np.ndarray]:
    """Reads rows of a checkpoint tensor; with `heads`, in llama.cpp's RoPE order (Q/K of Llama)."""
    if not heads:
        return partial(ckpt.read_rows, hf_name)
    order = permute_for_rope(np.arange(shape[0]), heads)
    if len(shape) == 1:  # a bias is a single row: reorder its elements
        return lambda start, end: ckpt.read_rows(hf_name, 0, 1)[:, order]
    return partial(ckpt.read_rows, hf_name, row_order=order)


def _named_tensors(ckpt: Checkpoint, config: ModelConfig) -> dict[str, str]:
    """GGUF name → HF name of every checkpoint tensor that goes into the file."""
    names = {}
    for hf_name in ckpt.entries:
        name = gguf_tensor_name(hf_name)
        if name is None or (name == "output.weight" and config.tie_word_embeddings):
            continue  # tied: llama.cpp reuses token_embd as the output matrix
        names[name] = hf_name
    if "token_embd.weight" not in names:
        raise QConvertError("checkpoint has no model.embed_tokens.weight", "checkpoint", "is this a causal LM checkpoint?")
    embd = ckpt.entries[names["token_embd.weight"]].shape
    if embd != (config.vocab_size, config.hidden_size):
        raise QConvertError(
            f"embedding shape {embd} does not match config.json (vocab_size {config.vocab_size}, hidden_size {config.hidden_size})",
            "checkpoint",
        )
    return names


def plan_tensors(ckpt: Checkpoint, config: ModelConfig, spec: ArchSpec, file_type: FileType, has_imatrix: bool = False) -> list[TensorSource]:
    names = _named_tensors(ckpt, config)
    model = ModelShape(spec.gguf_arch, config.num_layers, config.num_heads, config.num_kv_heads, "output.weight" not in names)
    weight_type = FILE_TYPES[file_type].default if not FILE_TYPES[file_type].quantized else GGMLQuantizationType.F16
    plan = []
    for name, hf_name in names.items():
        shape = ckpt.entries[hf_name].shape
        # What convert_hf_to_gguf.py would store, then what llama-quantize makes of it.
        stored = GGMLQuantizationType.F32 if _keeps_f32(name, shape) else weight_type
        out_type = tensor_type(name, shape, stored, file_type, model, has_imatrix)
        heads = {"attn_q": config.num_heads, "attn_k": config.num_kv_heads}.get(name.split(".")[-2], 0) if spec.permute_qk else 0
        plan.append(TensorSource(name, shape, out_type, _row_reader(ckpt, hf_name, shape, heads)))
    if config.rope_scaling and rope_kind(config.rope_scaling) == "llama3":
        factors = llama3_rope_factors(config.rope_scaling, config.head_dim, config.rope_theta)
        plan.append(TensorSource("rope_freqs.weight", factors.shape, GGMLQuantizationType.F32, partial(_constant_rows, factors)))
    return sorted(plan, key=lambda t: _sort_key(t.name))


def _write_hparams(w: GGUFWriter, config: ModelConfig, spec: ArchSpec, file_type: FileType, name: str) -> None:
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
    if "head_dim" in config.raw:  # stated in config.json: llama.cpp takes it as given
        w.add_key_length(config.head_dim)
        w.add_value_length(config.head_dim)
    if spec.write_vocab_size:
        w.add_vocab_size(config.vocab_size)
    if spec.write_rope_dims:
        w.add_rope_dimension_count(config.head_dim)
    if config.rope_scaling:
        write_rope_scaling(w, config.rope_scaling)
    w.add_file_type(FILE_TYPES[file_type].ftype)
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


def _check_importance_options(options: ConvertOptions) -> None:
    if options.imatrix is None and options.calib is None:
        if options.imatrix_out is not None:
            raise QConvertError("--imatrix-out keeps an importance matrix computed in-line", "--imatrix-out", "add --calib FILE or --source ... to compute one")
        return
    if options.imatrix is not None and options.calib is not None:
        raise QConvertError("both an importance matrix file and calibration options were given", "--imatrix", "give one or the other")
    if not FILE_TYPES[options.file_type].quantized:
        raise QConvertError(f"an importance matrix only steers quantization, and {options.file_type.value} is not quantized", "--type", "choose a quantized type, e.g. q4_k_m")
    if options.imatrix_out is not None:
        check_output_path(options.imatrix_out, options.force)


def _importance(model_dir: Path, options: ConvertOptions) -> tuple[ImportanceMatrix | None, Path]:
    """The importance matrix to quantize with: none, read from a file, or computed from a calibration set."""
    if options.imatrix is not None:
        return read_imatrix(options.imatrix), options.imatrix
    if options.calib is None:
        return None, model_dir
    from qconvert.imatrix.compute import compute_imatrix  # here: it imports torch
    from qconvert.layerwise.session import RunOptions, parse_compute_dtype

    run = RunOptions(device=options.device, threads=options.threads, force=options.force, progress=options.progress, dtype=parse_compute_dtype(options.compute_dtype, options.device))
    matrix = compute_imatrix(model_dir, options.calib, run)
    if options.imatrix_out is not None:
        write_imatrix(options.imatrix_out, matrix, options.force)
    return matrix, model_dir


def convert_hf_to_gguf(model_dir: Path, out_path: Path, options: ConvertOptions = ConvertOptions()) -> Path:
    """Convert the HF checkpoint in `model_dir` to the GGUF file `out_path`; returns `out_path`."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    check_output_path(out_path, options.force)
    _check_importance_options(options)
    config = ModelConfig.from_dir(model_dir)
    spec = arch_spec(config.architecture, model_dir / "config.json")
    vocab = load_gguf_vocab(model_dir, config.vocab_size, config.raw)
    ckpt = open_checkpoint(model_dir, config.raw)  # a GPTQ checkpoint is read as the dense weights it encodes
    imatrix, where = _importance(model_dir, options)
    plan = plan_tensors(ckpt, config, spec, options.file_type, imatrix is not None)
    if imatrix is not None:
        plan = attach_importance(plan, imatrix, where)

    def add_metadata(w: GGUFWriter) -> None:
        _write_hparams(w, config, spec, options.file_type, model_dir.name)
        _write_vocab(w, vocab)
        if imatrix is not None:
            write_imatrix_metadata(w, imatrix, str(options.imatrix or options.imatrix_out or "computed in-line from the calibration set"))

    with atomic_output(out_path, options.force) as tmp:
        write_gguf(tmp, spec.gguf_arch, add_metadata, plan, options.threads or default_threads(), options.progress)
    log.info("wrote %s (%d tensors)", out_path, len(plan))
    return out_path

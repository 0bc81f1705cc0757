"""Stream a Hugging Face checkpoint into a GGUF file of any llama.cpp type, one slab of rows at a time.

Every tensor is first planned from the safetensors headers alone (GGUF name, shape, type by
llama-quantize's rules), so the GGUF header and tensor table are written before any data; then
each tensor is read in row slabs, converted or quantized, and appended. Peak memory is a slab, not
the model, and no intermediate f16 file is written.

An MoE model's routed experts are stacked as llama.cpp wants them by qconvert/convert/moe.py.
"""

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from qconvert.calib.types import CalibInput
from qconvert.convert.arch import DENSE_FFN, F32_TENSORS, ArchSpec, arch_spec, expert_tensor, gguf_tensor_name, permute_for_rope
from qconvert.convert.moe import ExpertStack, check_moe_layout, expert_stacks, read_stacked
from qconvert.convert.rope import check_rope_scaling, llama3_rope_factors, rope_kind, write_rope_scaling
from qconvert.errors import QConvertError, quoted
from qconvert.gguf_stream import TensorSource, decoded_rows, write_gguf
from qconvert.hf.config import ModelConfig
from qconvert.hf.dequantized import Checkpoint, open_checkpoint
from qconvert.hf.tokenizer import load_gguf_vocab, write_vocab
from qconvert.imatrix.file import ImportanceMatrix, read_imatrix, write_imatrix
from qconvert.numeric import default_threads
from qconvert.outputs import atomic_output, check_output_path, spilling_beside
from qconvert.quant import kernels
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
    # round the decoder layers' weights with GPTQ's error compensation inside their blocks (needs calib)
    gptq: bool = False
    # fold AWQ scales searched against the type's block grid into the model first (needs calib)
    awq_scale: bool = False


def _keeps_f32(gguf_name: str, shape: tuple[int, ...]) -> bool:
    """Norms, biases, other 1-D tensors and MoE routers stay F32, as llama.cpp expects."""
    return len(shape) <= 1 or gguf_name.endswith(("_norm.weight", *F32_TENSORS)) or not gguf_name.endswith(".weight")


def _sort_key(gguf_name: str) -> tuple:
    # rope_freqs and token_embd first, then layers in order, then output_norm and output
    if gguf_name.startswith("blk."):
        _, layer, rest = gguf_name.split(".", 2)
        return (1, int(layer), rest)
    return (0 if gguf_name.startswith(("rope_freqs", "token_embd")) else 2, 0, gguf_name)


def _constant_rows(values: np.ndarray, start: int, end: int) -> np.ndarray:
    return values.reshape(-1, values.shape[-1])[start:end]


def _rope_heads(gguf_name: str, config: ModelConfig, spec: ArchSpec) -> int:
    """The heads whose Q/K rows llama.cpp wants in its RoPE order (Llama), or 0: rows stay as they are."""
    return {"attn_q": config.num_heads, "attn_k": config.num_kv_heads}.get(gguf_name.split(".")[-2], 0) if spec.permute_qk else 0


def _row_reader(ckpt: Checkpoint, hf_name: str, shape: tuple[int, ...], heads: int) -> Callable[[int, int], np.ndarray]:
    """Reads rows of a checkpoint tensor; with `heads`, in llama.cpp's RoPE order (Q/K of Llama)."""
    if not heads:
        return partial(ckpt.read_rows, hf_name)
    if shape[0] % (2 * heads):
        raise QConvertError(
            f"{quoted(hf_name)} has {shape[0]} rows, which do not split into {heads} heads of even size", "config.json",
            "its head counts (num_attention_heads, num_key_value_heads) do not fit the checkpoint: fix config.json, or download it again",
        )
    order = permute_for_rope(np.arange(shape[0]), heads)
    if len(shape) == 1:  # a bias is a single row: reorder its elements
        return lambda start, end: ckpt.read_rows(hf_name, 0, 1)[:, order]
    return partial(ckpt.read_rows, hf_name, row_order=order)


def _named_tensors(ckpt: Checkpoint, config: ModelConfig) -> tuple[dict[str, str], dict[str, ExpertStack]]:
    """GGUF name → HF name of every checkpoint tensor that goes into the file as it is, and GGUF
    name → stack of the routed experts (for an MoE model)."""
    names, experts = {}, {}
    for hf_name in ckpt.entries:
        if (expert := expert_tensor(hf_name)) is not None:
            experts[hf_name] = expert
            continue
        name = gguf_tensor_name(hf_name)
        if name is None or (name == "output.weight" and config.tie_word_embeddings):
            continue  # tied: llama.cpp reuses token_embd as the output matrix
        names[name] = hf_name
    stacks = expert_stacks(ckpt, config, experts) if experts else {}
    if "token_embd.weight" not in names:
        raise QConvertError("checkpoint has no model.embed_tokens.weight", "checkpoint", "is this a causal LM checkpoint?")
    embd = ckpt.entries[names["token_embd.weight"]].shape
    if embd != (config.vocab_size, config.hidden_size):
        raise QConvertError(
            f"embedding shape {embd} does not match config.json (vocab_size {config.vocab_size}, hidden_size {config.hidden_size})",
            "checkpoint",
        )
    return names, stacks


# What every decoder layer of every supported architecture has (an MoE layer's experts: moe.py).
LAYER_TENSORS = ("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_norm.weight")


def _check_layers_complete(names: set[str], num_layers: int, dense: bool) -> None:
    """Every decoder layer has the tensors all layers need and those the other layers have, and no
    tensor belongs to a layer past the config's count: llama.cpp refuses such a file at load time."""
    layers: dict[int, set[str]] = {i: set() for i in range(num_layers)}
    for name in names:
        if not name.startswith("blk."):
            continue
        index, rest = name[4:].split(".", 1)
        if int(index) not in layers:
            raise QConvertError(f"tensor {name} is for layer {index}, but config.json has num_hidden_layers {num_layers}", "checkpoint", "do config.json and the weights belong to the same model?")
        layers[int(index)].add(rest)
    every = set().union(*layers.values(), LAYER_TENSORS, DENSE_FFN if dense else ())
    for index, have in layers.items():
        if missing := sorted(every - have):
            raise QConvertError(f"layer {index} lacks its tensor blk.{index}.{missing[0]}", "checkpoint", "is the checkpoint complete? re-download it")


def plan_tensors(ckpt: Checkpoint, config: ModelConfig, spec: ArchSpec, file_type: FileType, has_imatrix: bool = False) -> list[TensorSource]:
    names, stacks = _named_tensors(ckpt, config)
    check_moe_layout(set(names) | set(stacks), spec, config)
    _check_layers_complete(set(names) | set(stacks), config.num_layers, dense=spec.moe is None)
    model = ModelShape(spec.gguf_arch, config.num_layers, config.num_heads, config.num_kv_heads, "output.weight" not in names, config.n_experts or 0)
    weight_type = FILE_TYPES[file_type].default if not FILE_TYPES[file_type].quantized else GGMLQuantizationType.F16
    sources = {name: (ckpt.entries[hf_name].shape, hf_name) for name, hf_name in names.items()}
    sources.update({name: (stack.shape, stack) for name, stack in stacks.items()})
    plan = []
    for name, (shape, source) in sources.items():
        # What convert_hf_to_gguf.py would store, then what llama-quantize makes of it.
        stored = GGMLQuantizationType.F32 if _keeps_f32(name, shape) else weight_type
        out_type = tensor_type(name, shape, stored, file_type, model, has_imatrix)
        if isinstance(source, ExpertStack):
            read_rows = partial(read_stacked, ckpt, source.parts)
        else:
            read_rows = _row_reader(ckpt, source, shape, _rope_heads(name, config, spec))
        plan.append(TensorSource(name, shape, out_type, read_rows))
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
    # convert_hf_to_gguf.py writes the expert counts for any architecture whose config gives them,
    # the experts' widths for the MoE ones.
    if config.n_experts is not None:
        w.add_expert_count(config.n_experts)
    if config.n_experts_used is not None:
        w.add_expert_used_count(config.n_experts_used)
    if spec.moe is not None and config.expert_intermediate_size is not None:
        w.add_expert_feed_forward_length(config.expert_intermediate_size)
    if spec.moe is not None and config.shared_expert_intermediate_size is not None:
        w.add_expert_shared_feed_forward_length(config.shared_expert_intermediate_size)
    w.add_file_type(FILE_TYPES[file_type].ftype)
    w.add_quantization_version(QUANTIZATION_VERSION)


def _check_importance_options(options: ConvertOptions) -> None:
    for flag, on in (("--gptq", options.gptq), ("--awq-scale", options.awq_scale)):
        if on and options.calib is None:
            raise QConvertError(f"{flag} needs a calibration set", flag, "add --calib FILE or --source ...")
    if options.imatrix is None and options.calib is None:
        if options.imatrix_out is not None:
            raise QConvertError("--imatrix-out keeps an importance matrix computed in-line", "--imatrix-out", "add --calib FILE or --source ... to compute one")
        return
    if options.imatrix is not None and options.awq_scale:
        raise QConvertError("an importance matrix file is of the model as it is, and --awq-scale changes the model", "--imatrix", "leave out --imatrix: the matrix is then measured on the scaled model")
    if options.imatrix is not None and options.calib is not None and not options.gptq:
        raise QConvertError("both an importance matrix file and calibration options were given", "--imatrix", "give one or the other (or add --gptq: its block fits then use the file)")
    if not FILE_TYPES[options.file_type].quantized:
        what = "GPTQ rounding" if options.gptq else "AWQ scaling" if options.awq_scale else "an importance matrix"
        raise QConvertError(f"{what} only steers quantization, and {options.file_type.value} is not quantized", "--type", "choose a quantized type, e.g. q4_k_m")
    if options.imatrix_out is not None:
        check_output_path(options.imatrix_out, options.force)


def _importance(model_dir: Path, options: ConvertOptions) -> tuple[ImportanceMatrix | None, Path]:
    """The importance matrix to quantize with: none, read from a file, or computed from a calibration set."""
    if options.imatrix is not None:
        return read_imatrix(options.imatrix), options.imatrix
    if options.calib is None:
        return None, model_dir
    from qconvert.imatrix.compute import compute_imatrix  # here: it imports torch

    matrix = compute_imatrix(model_dir, options.calib, _run_options(options))
    if options.imatrix_out is not None:
        write_imatrix(options.imatrix_out, matrix, options.force)
    return matrix, model_dir


def _run_options(options: ConvertOptions):
    from qconvert.layerwise.session import RunOptions, parse_compute_dtype  # here: it imports torch

    return RunOptions(device=options.device, threads=options.threads, force=options.force, progress=options.progress, dtype=parse_compute_dtype(options.compute_dtype, options.device))


def _awq_scaled(model_dir: Path, work_dir: Path, options: ConvertOptions) -> Path:
    """The model with AWQ's scales, searched against the block grid of the file type, folded into its
    weights (`qconvert awq --gguf-type TYPE`, without clipping: llama.cpp picks its own ranges)."""
    from qconvert.awq.config import AWQConfig
    from qconvert.awq.run import gguf_search_grid, quantize_awq

    file_type, bits, group_size, zero_point = gguf_search_grid(model_dir, options.file_type.value)
    config = AWQConfig(bits=bits, group_size=group_size, zero_point=zero_point, clip=False, export_compatible=True, gguf_type=file_type)
    return quantize_awq(model_dir, work_dir / "awq-scaled", options.calib, config, _run_options(options))


def _solve_in_blocks(model_dir: Path, out_path: Path, plan: list[TensorSource], config: ModelConfig, spec: ArchSpec, options: ConvertOptions):
    """GPTQ inside the blocks (qconvert.blockq): the plan with the decoder layers' solved bytes, and
    the importance matrix the block fits used."""
    from qconvert.blockq.run import embedding_importance, solve_model, with_solved, with_uniform_embeddings
    from qconvert.blockq.solve import BlockGPTQConfig

    types = {t.name: t.out_type for t in plan}
    given = read_imatrix(options.imatrix) if options.imatrix is not None else None
    if given is not None:
        attach_importance(plan, given, options.imatrix)  # refuses a matrix of another model before any work
    tied = "output.weight" not in types
    embd = next(t for t in plan if t.name == "token_embd.weight")
    embedding_rows = None
    if embd.out_type in kernels.BLOCK_TYPES:  # the first layer calibrated on the embeddings the file computes with
        embd = replace(embd, importance=embedding_importance(given, embd.out_type, config.hidden_size, tied))
        embedding_rows = partial(decoded_rows, embd, threads=options.threads or default_threads())
    solved = solve_model(model_dir, options.calib, lambda name, shape: types[name], BlockGPTQConfig(), out_path.parent, given, _run_options(options), embedding_rows)
    if given is None and not tied:
        solved = replace(solved, importance=with_uniform_embeddings(solved.importance, types["token_embd.weight"], config.hidden_size))

    def row_order(name: str, n_rows: int) -> np.ndarray | None:
        heads = _rope_heads(name, config, spec)
        return permute_for_rope(np.arange(n_rows), heads) if heads else None

    return with_solved(plan, solved, row_order), solved


def _warn_routing(config: ModelConfig, spec: ArchSpec) -> None:
    """llama.cpp's graph fixes whether the chosen experts' weights are renormalized; a config that
    says otherwise converts (as convert_hf_to_gguf.py converts it) but will not compute the same."""
    if spec.moe is None or "norm_topk_prob" not in config.raw:
        return
    if bool(config.raw["norm_topk_prob"]) != spec.moe.renormalizes_top_k:
        log.warning(
            "config.json says norm_topk_prob=%s, but llama.cpp's %s always %s the chosen experts' weights: its outputs will differ from transformers'",
            config.raw["norm_topk_prob"], spec.gguf_arch, "renormalizes" if spec.moe.renormalizes_top_k else "keeps",
        )


def convert_hf_to_gguf(model_dir: Path, out_path: Path, options: ConvertOptions = ConvertOptions()) -> Path:
    """Convert the HF checkpoint in `model_dir` to the GGUF file `out_path`; returns `out_path`."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    check_output_path(out_path, options.force)
    _check_importance_options(options)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".qconvert-work-") as work:
        source_dir = _awq_scaled(model_dir, Path(work), options) if options.awq_scale else model_dir
        _convert(source_dir, model_dir.name, out_path, options)
    log.info("wrote %s", out_path)
    return out_path


def _convert(model_dir: Path, name: str, out_path: Path, options: ConvertOptions) -> None:
    config = ModelConfig.from_dir(model_dir)
    spec = arch_spec(config.architecture, model_dir / "config.json")
    if config.rope_scaling:
        check_rope_scaling(config.rope_scaling, spec.gguf_arch)
    _warn_routing(config, spec)
    vocab = load_gguf_vocab(model_dir, config.vocab_size, config.raw)
    ckpt = open_checkpoint(model_dir, config.raw)  # a GPTQ checkpoint is read as the dense weights it encodes
    solved = None
    if options.gptq:
        plan = plan_tensors(ckpt, config, spec, options.file_type, has_imatrix=True)
        with spilling_beside(out_path):
            plan, solved = _solve_in_blocks(model_dir, out_path, plan, config, spec, options)
        imatrix, where = solved.importance, options.imatrix or model_dir
        if options.imatrix_out is not None:
            write_imatrix(options.imatrix_out, imatrix, options.force)
    else:
        imatrix, where = _importance(model_dir, options)
        plan = plan_tensors(ckpt, config, spec, options.file_type, imatrix is not None)
    if imatrix is not None:
        plan = attach_importance(plan, imatrix, where)

    def add_metadata(w: GGUFWriter) -> None:
        _write_hparams(w, config, spec, options.file_type, name)
        write_vocab(w, vocab, spec.gguf_arch)
        if imatrix is not None:
            source = "GPTQ Hessian diagonals" if options.gptq and options.imatrix is None else "computed in-line from the calibration set"
            write_imatrix_metadata(w, imatrix, str(options.imatrix or options.imatrix_out or source))

    try:
        with atomic_output(out_path, options.force) as tmp:
            write_gguf(tmp, spec.gguf_arch, add_metadata, plan, options.threads or default_threads(), options.progress)
    finally:
        if solved is not None:
            solved.spool.close()
    log.info("%s: %d tensors", out_path, len(plan))

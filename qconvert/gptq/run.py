"""`qconvert gptq`: quantize a checkpoint with GPTQ, layer by layer, into a GPTQ v1 checkpoint.

Each decoder layer's linears are solved in AutoGPTQ's sub-layer order (true-sequential) and the
layer's outputs are recomputed with its quantized weights before they feed the next layer. Linears
that read the same input (q/k/v, up/gate) are solved together on their stacked rows.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qconvert import __version__
from qconvert.calib.build import resolve_calibration
from qconvert.calib.options import CalibInput
from qconvert.calib.tokenize import load_tokenizer
from qconvert.convert.arch import DecoderBlock, arch_spec
from qconvert.errors import QConvertError
from qconvert.gptq.config import GPTQConfig
from qconvert.gptq.hessian import Hessian
from qconvert.gptq.packing import PACK, pack_linear
from qconvert.gptq.solve import gptq_quantize
from qconvert.hf.checkpoint_files import copy_tokenizer_files, write_config, write_json
from qconvert.hf.config import ModelConfig
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.hf.shard_writer import ShardWriter
from qconvert.layerwise.driver import DriverOptions, Group, run_layerwise
from qconvert.outputs import atomic_output_dir, check_output_path

log = logging.getLogger(__name__)

MIN_CALIB_TOKENS = 1024  # fewer make Hessians of rank far below any real width


@dataclass(frozen=True)
class RunOptions:
    device: str = "cpu"
    threads: int | None = None
    max_shard_bytes: int = 4 * 10**9
    force: bool = False
    progress: bool = True
    dtype: torch.dtype = torch.float32  # of the calibration forwards (the CLI's default is auto); the solve is float32 always


def quantization_config(config: GPTQConfig) -> dict:
    """config.json's quantization_config (and quantize_config.json), as AutoGPTQ and GPTQModel write it."""
    return {
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
        "bits": config.bits,
        "group_size": config.group_size,
        "desc_act": config.desc_act,
        "static_groups": config.static_groups,
        "sym": config.sym,
        "damp_percent": config.damp_percent,
        "true_sequential": config.true_sequential,
        "lm_head": False,
        "pack_dtype": "int32",
        "meta": {"quantizer": [f"qconvert:{__version__}"]},
    }


class GPTQAlgorithm:
    """The GPTQ side of the layer-wise driver: Hessians from the hooks, solves per input group."""

    def __init__(self, config: GPTQConfig, writer: ShardWriter, block: DecoderBlock, ckpt: SafetensorsCheckpoint, device: torch.device):
        self.config, self.writer, self.block, self.ckpt, self.device = config, writer, block, ckpt, device
        self.hessians: dict[Group, Hessian] = {}
        self.packed: dict[str, torch.Tensor] = {}

    def stages(self, block: DecoderBlock) -> list[list[Group]]:
        if self.config.true_sequential:
            return [[group] for group in block.sequential]
        return [list(block.sequential)]

    def observe(self, layer_index: int, group: Group, x: torch.Tensor) -> None:
        if group not in self.hessians:
            self.hessians[group] = Hessian(x.shape[-1], self.device)
        self.hessians[group].add(x)

    def process(self, layer_index: int, layer: nn.Module, group: Group) -> None:
        hessian = self.hessians.pop(group).matrix()
        linears = [layer.get_submodule(name) for name in group]
        prefix = f"{self.block.layers_path}.{layer_index}"
        # the checkpoint's own weights, whatever precision the layer runs in: (sum of out, in)
        stacked = torch.cat([torch.from_numpy(self.ckpt.load(f"{prefix}.{name}.weight")) for name in group]).to(self.device, torch.float32)
        where = f"layer {layer_index} {'+'.join(name.rsplit('.', 1)[-1] for name in group)}"
        result = gptq_quantize(stacked, hessian, self.config, where)
        start = 0
        for name, linear in zip(group, linears):
            part = result.rows(start, start + linear.out_features)
            start += linear.out_features
            linear.weight.data = part.dequantized().to(linear.weight.dtype)
            for key, tensor in pack_linear(part, self.config.bits).items():
                self.packed[f"{prefix}.{name}.{key}"] = tensor

    def finish_layer(self, layer_index: int, layer: nn.Module) -> None:
        prefix = f"{self.block.layers_path}.{layer_index}"
        quantized = {f"{name}.weight" for name in self.block.linears}
        for name in layer.state_dict():  # norms and biases: the checkpoint's own, in fp16
            if name not in quantized:
                self.writer.add(f"{prefix}.{name}", torch.from_numpy(self.ckpt.load(f"{prefix}.{name}")).half())
        for name, tensor in self.packed.items():
            self.writer.add(name, tensor)
        self.packed = {}


def _check_widths(config: GPTQConfig, ckpt: SafetensorsCheckpoint, block: DecoderBlock, where: Path) -> None:
    """Packing needs input widths of whole 32-value runs, and output widths that fill whole words
    (at 3 bits whole runs too); say so before any work."""
    for name in block.linears:
        entry = ckpt.entries.get(f"{block.layers_path}.0.{name}.weight")
        if entry is None:
            raise QConvertError(f"checkpoint has no {block.layers_path}.0.{name}.weight", where, "is it a complete checkpoint of the architecture config.json names?")
        out_features, in_features = entry.shape
        if in_features % PACK or (config.bits == 3 and out_features % PACK) or (out_features * config.bits) % 32:
            raise QConvertError(
                f"{name} is {out_features}×{in_features}: GPTQ packing needs the input width (and, at 3 bits, the output width) to be a multiple of {PACK}",
                where,
            )


def quantize_gptq(model_dir: Path, out_dir: Path, calib_input: CalibInput, config: GPTQConfig, options: RunOptions = RunOptions()) -> Path:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_output_path(out_dir, options.force, folder=True)
    model = ModelConfig.from_dir(model_dir)
    if model.raw.get("quantization_config"):
        raise QConvertError("the model is already quantized", model_dir / "config.json", "give the original fp16/bf16/fp32 checkpoint")
    spec = arch_spec(model.architecture, model_dir / "config.json")
    ckpt = SafetensorsCheckpoint.open(model_dir)
    _check_widths(config, ckpt, spec.block, model_dir)
    device = _device(options.device)
    tokenizer = load_tokenizer(model_dir)
    calib = resolve_calibration(tokenizer, calib_input, options.progress)
    tokens = int(calib.attention_mask.sum())
    if tokens < MIN_CALIB_TOKENS:
        raise QConvertError(
            f"the calibration set holds {tokens} tokens; GPTQ needs at least {MIN_CALIB_TOKENS}", "calibration", "give more text, or more or longer samples"
        )
    if options.threads:
        torch.set_num_threads(options.threads)

    with atomic_output_dir(out_dir, options.force) as tmp:
        writer = ShardWriter(tmp, options.max_shard_bytes)
        algorithm = GPTQAlgorithm(config, writer, spec.block, ckpt, device)
        run_layerwise(model_dir, spec.block, ckpt, calib, algorithm, DriverOptions(device, options.dtype, options.progress, "gptq"))
        for name in ckpt.entries:  # embeddings, final norm, lm_head: unquantized
            if not name.startswith(f"{spec.block.layers_path}."):
                writer.add(name, torch.from_numpy(ckpt.load(name)).half())
        writer.close()
        qconfig = quantization_config(config)
        write_config(tmp, model.raw, qconfig)
        write_json(tmp / "quantize_config.json", qconfig)
        copy_tokenizer_files(model_dir, tmp)
    log.info("wrote %s", out_dir)
    return out_dir


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _native_bf16_cpu() -> bool:
    # private torch helpers (2.3 on): AMX tiles or AVX512-BF16 instructions
    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(check() for check in checks if check is not None)


def parse_compute_dtype(name: str, device: str) -> torch.dtype:
    """auto: bfloat16 where the hardware computes it natively (CUDA; CPUs with AMX or AVX512-BF16), else float32."""
    if name == "auto":
        if device == "cuda":
            return torch.bfloat16
        return torch.bfloat16 if _native_bf16_cpu() else torch.float32
    if name not in COMPUTE_DTYPES:
        raise QConvertError(f"unknown compute dtype {name!r}", "--compute-dtype", f"choose auto or one of {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise QConvertError("no CUDA device is available to this torch", "--device cuda", "use --device cpu, or install a CUDA build of torch")
    if name not in ("cpu", "cuda"):
        raise QConvertError(f"unknown device {name!r}", "--device", "choose cpu or cuda")
    return torch.device(name)

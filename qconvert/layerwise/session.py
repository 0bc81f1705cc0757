"""What every layer-wise stage (GPTQ, AWQ, the importance matrix) does around the driver: check the
model and the calibration set before any work, and write a checkpoint folder from the layers the
algorithm writes and the tensors outside the decoder layers."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from qconvert.calib.build import load_tokenizer, resolve_calibration
from qconvert.calib.store import CalibrationSet
from qconvert.calib.types import CalibInput
from qconvert.convert.arch import ArchSpec, DecoderBlock, arch_spec
from qconvert.errors import QConvertError
from qconvert.hf.checkpoint_files import copy_tokenizer_files, write_config, write_json
from qconvert.hf.config import ModelConfig
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.hf.shard_writer import ShardWriter
from qconvert.layerwise.driver import DriverOptions, LayerAlgorithm, run_layerwise
from qconvert.outputs import atomic_output_dir

MIN_CALIB_TOKENS = 1024  # fewer make Hessians of rank far below any real width, and AWQ's statistics noise


@dataclass(frozen=True)
class RunOptions:
    device: str = "cpu"
    threads: int | None = None
    max_shard_bytes: int = 4 * 10**9
    force: bool = False
    progress: bool = True
    dtype: torch.dtype = torch.float32  # of the calibration forwards (the CLI's default is auto); the algorithms' math is float32


@dataclass
class Session:
    model: ModelConfig
    spec: ArchSpec
    block: DecoderBlock  # the spec's, written out for this model's experts
    ckpt: SafetensorsCheckpoint
    tokenizer: object
    device: torch.device

    def calibration(self, calib_input: CalibInput, method: str, progress: bool) -> CalibrationSet:
        calib = resolve_calibration(self.tokenizer, calib_input, progress)
        tokens = int(calib.attention_mask.sum())
        if tokens < MIN_CALIB_TOKENS:
            raise QConvertError(
                f"the calibration set holds {tokens} tokens; {method} needs at least {MIN_CALIB_TOKENS}", "calibration", "give more text, or more or longer samples"
            )
        return calib

    def write_checkpoint(
        self, model_dir: Path, out_dir: Path, calib: CalibrationSet, algorithm_for: Callable[[ShardWriter], LayerAlgorithm], options: RunOptions, desc: str, quantization_config: dict | None,
        extra_json: dict[str, dict] | None = None,
    ) -> None:
        """Runs the algorithm layer by layer into a new checkpoint folder: the layers it writes,
        everything outside the decoder layers (embeddings, final norm, lm_head) in fp16, config.json
        with `quantization_config`, `extra_json` files (GPTQ's quantize_config.json), the tokenizer files."""
        with atomic_output_dir(out_dir, options.force) as tmp:
            writer = ShardWriter(tmp, options.max_shard_bytes)
            run_layerwise(model_dir, self.block, self.ckpt, calib, algorithm_for(writer), DriverOptions(self.device, options.dtype, options.progress, desc))
            for name in self.ckpt.entries:
                if not name.startswith(f"{self.block.layers_path}."):
                    writer.add(name, torch.from_numpy(self.ckpt.load(name)).half())
            writer.close()
            write_config(tmp, self.model.raw, quantization_config)
            for name, data in (extra_json or {}).items():
                write_json(tmp / name, data)
            copy_tokenizer_files(model_dir, tmp)


def decoder_block(spec: ArchSpec, model: ModelConfig, where: Path) -> DecoderBlock:
    """The architecture's decoder block with its routed experts written out for this model."""
    raw = model.raw
    n_experts = int(raw.get("num_experts") or raw.get("num_local_experts") or 0)
    if n_experts and (raw.get("mlp_only_layers") or int(raw.get("decoder_sparse_step") or 1) != 1):
        raise QConvertError("some layers of this MoE model are dense (mlp_only_layers / decoder_sparse_step)", where, "qconvert quantizes MoE models whose every layer has experts")
    return spec.block.for_experts(n_experts)


def open_session(model_dir: Path, options: RunOptions) -> Session:
    """The checks that need no calibration: an unquantized model of a known architecture, the device.
    Check the output path first: nothing should run before the user hears it would be overwritten."""
    model = ModelConfig.from_dir(model_dir)
    if model.raw.get("quantization_config"):
        raise QConvertError("the model is already quantized", model_dir / "config.json", "give the original fp16/bf16/fp32 checkpoint")
    spec = arch_spec(model.architecture, model_dir / "config.json")
    block = decoder_block(spec, model, model_dir / "config.json")
    ckpt = SafetensorsCheckpoint.open(model_dir)
    for name in block.linears:
        if f"{block.layers_path}.0.{name}.weight" not in ckpt.entries:
            raise QConvertError(f"checkpoint has no {block.layers_path}.0.{name}.weight", model_dir, "is it a complete checkpoint of the architecture config.json names?")
    device = _device(options.device)
    if options.threads:
        torch.set_num_threads(options.threads)
    return Session(model, spec, block, ckpt, load_tokenizer(model_dir), device)


def linear_shapes(session: Session) -> dict[str, tuple[int, int]]:
    """(out, in) of each quantizable linear, from layer 0."""
    block = session.block
    return {name: tuple(session.ckpt.entries[f"{block.layers_path}.0.{name}.weight"].shape) for name in block.linears}


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def _native_bf16_cpu() -> bool:
    """AMX tiles, or AVX512-BF16 on an AMD CPU (Zen 4 on), where oneDNN's bfloat16 matmul measured
    2× the float32 one (MKL's sgemm: 126 against 52-61 GFLOP/s on 2 cores). On an Intel CPU with
    AVX512-BF16 but no AMX it measured half (155 against 310), so float32 stays there."""
    cpu = torch.cpu
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return True
    return _cpu_vendor() == "AuthenticAMD" and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()


def parse_compute_dtype(name: str, device: str) -> torch.dtype:
    """auto: bfloat16 where the hardware computes it fast (CUDA; CPUs with AMX; AMD CPUs with AVX512-BF16), else float32."""
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

"""`qconvert gptq`: quantize a checkpoint with GPTQ, layer by layer, into a GPTQ v1 checkpoint.

Each decoder layer's linears are solved in AutoGPTQ's sub-layer order (true-sequential) and the
layer's outputs are recomputed with its quantized weights before they feed the next layer. Linears
that read the same input (q/k/v, up/gate) are solved together on their stacked rows.
"""

import logging
from pathlib import Path

import torch
from torch import nn

from qconvert import __version__
from qconvert.calib.types import CalibInput
from qconvert.convert.arch import DecoderBlock
from qconvert.errors import QConvertError
from qconvert.gptq.config import GPTQConfig
from qconvert.gptq.hessian import HessianGroups
from qconvert.gptq.packing import PACK, pack_linear
from qconvert.gptq.solve import gptq_quantize, round_to_nearest
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.hf.shard_writer import ShardWriter
from qconvert.layerwise.driver import Group
from qconvert.layerwise.session import RunOptions, linear_shapes, open_session
from qconvert.outputs import check_output_path

log = logging.getLogger(__name__)


def quantization_config(config: GPTQConfig, block: DecoderBlock) -> dict:
    """config.json's quantization_config (and quantize_config.json), as AutoGPTQ and GPTQModel write it."""
    extra = {}
    if block.n_experts:  # a MoE layer has linears left unquantized (Qwen2-MoE's shared-expert gate): name the quantized ones
        extra["modules_in_block_to_quantize"] = [list(group) for group in block.groups]
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
        **extra,
    }


class GPTQAlgorithm(HessianGroups):
    """The GPTQ side of the layer-wise driver: Hessians from the hooks, solves per input group."""

    def __init__(self, config: GPTQConfig, writer: ShardWriter, block: DecoderBlock, ckpt: SafetensorsCheckpoint, device: torch.device):
        super().__init__(device)
        self.config, self.writer, self.block, self.ckpt = config, writer, block, ckpt
        self.packed: dict[str, torch.Tensor] = {}

    def stages(self, block: DecoderBlock) -> list[list[Group]]:
        if self.config.true_sequential:
            return [list(stage) for stage in block.stages]
        return [list(block.groups)]

    def _solve(self, layer_index: int, layer: nn.Module, group: Group) -> None:
        observed = self.hessians.pop(group, None)
        linears = [layer.get_submodule(name) for name in group]
        prefix = f"{self.block.layers_path}.{layer_index}"
        # the checkpoint's own weights, whatever precision the layer runs in: (sum of out, in)
        stacked = torch.cat([torch.from_numpy(self.ckpt.load(f"{prefix}.{name}.weight")) for name in group]).to(self.device, torch.float32)
        where = f"layer {layer_index} {'+'.join(name.rsplit('.', 1)[-1] for name in group)}"
        if observed is None or not observed.tokens:
            # An expert no calibration token was routed to: round-to-nearest on the same grid, as
            # GPTQModel falls back to for such experts.
            result = round_to_nearest(stacked, self.config)
        else:
            result = gptq_quantize(stacked, observed.matrix(), self.config, where)
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


def _check_widths(config: GPTQConfig, shapes: dict[str, tuple[int, int]], where: Path) -> None:
    """Packing needs input widths of whole 32-value runs, and output widths that fill whole words
    (at 3 bits whole runs too); say so before any work."""
    for name, (out_features, in_features) in shapes.items():
        if in_features % PACK or (config.bits == 3 and out_features % PACK) or (out_features * config.bits) % 32:
            raise QConvertError(
                f"{name} is {out_features}×{in_features}: GPTQ packing needs the input width (and, at 3 bits, the output width) to be a multiple of {PACK}",
                where,
            )


def quantize_gptq(model_dir: Path, out_dir: Path, calib_input: CalibInput, config: GPTQConfig, options: RunOptions = RunOptions()) -> Path:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_output_path(out_dir, options.force, folder=True)
    session = open_session(model_dir, options)
    _check_widths(config, linear_shapes(session), model_dir)
    calib = session.calibration(calib_input, "GPTQ", options.progress)

    def algorithm_for(writer: ShardWriter) -> GPTQAlgorithm:
        return GPTQAlgorithm(config, writer, session.block, session.ckpt, session.device)

    qconfig = quantization_config(config, session.block)  # AutoGPTQ also writes it as quantize_config.json
    session.write_checkpoint(model_dir, out_dir, calib, algorithm_for, options, "gptq", qconfig, {"quantize_config.json": qconfig})
    log.info("wrote %s", out_dir)
    return out_dir

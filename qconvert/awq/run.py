"""`qconvert awq`: AWQ layer by layer, into an AWQ GEMM checkpoint or a scaled fp16 checkpoint.

Per decoder layer (AutoAWQ's order): the inputs of every linear are captured with the layer as
loaded, and its outputs feed the next layer unchanged; each scaling group's scales are searched
against the original weights, then all are folded into the weights (and the previous norm or
linear); then clipping ranges are searched on the scaled weights; then the weights are packed,
or, with export_compatible, written scaled and clipped in fp16.
"""

import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from qconvert import __version__
from qconvert.awq.config import PACKED_WIDTH, AWQConfig
from qconvert.awq.grid import quantize
from qconvert.awq.packing import pack_gemm
from qconvert.awq.search import apply_clip, search_clip, search_scales, weight_magnitude
from qconvert.awq.trial import GGUFTrial, GridTrial
from qconvert.calib.types import CalibInput
from qconvert.convert.arch import DecoderBlock, ScalingGroup
from qconvert.errors import QConvertError
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.hf.shard_writer import ShardWriter
from qconvert.layerwise.driver import Group, LayerCalls, real_tokens
from qconvert.layerwise.session import RunOptions, Session, decoder_block, linear_shapes, open_session
from qconvert.outputs import check_output_path
from qconvert.quant.file_types import FileType
from qconvert.quant.tensor_types import ModelShape

log = logging.getLogger(__name__)


def quantization_config(config: AWQConfig) -> dict:
    """config.json's quantization_config for the GEMM format, as AutoAWQ writes it. A symmetric grid
    is stored with explicit zeros of 2^(b−1), which every GEMM loader reads: zero_point stays true."""
    return {
        "quant_method": "awq",
        "version": "gemm",
        "bits": config.bits,
        "group_size": config.group_size,
        "zero_point": True,
        "modules_to_not_convert": None,
        "meta": {"quantizer": [f"qconvert:{__version__}"], "zero_point_searched": config.zero_point, "clip": config.clip},
    }


def _first(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _takes_layer_kwargs(module: nn.Module) -> bool:
    """Attention needs the layer's attention mask and position embeddings; linears and MLPs take x alone."""
    return "attention_mask" in inspect.signature(module.forward).parameters


class AWQAlgorithm:
    """The AWQ side of the layer-wise driver."""

    propagate_original = True  # AutoAWQ feeds each layer the unquantized outputs of the one before

    def __init__(self, config: AWQConfig, writer: ShardWriter, block: DecoderBlock, ckpt: SafetensorsCheckpoint, trial: GridTrial | GGUFTrial):
        self.config, self.writer, self.block, self.ckpt, self.trial = config, writer, block, ckpt, trial
        # per input group (or scaling group's inspected module): (x (b, seq, in), real-token mask) per batch seen
        self.inputs: dict[frozenset, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.weights: dict[str, torch.Tensor] = {}  # the layer's tensors in float32, scaled and clipped

    def stages(self, block: DecoderBlock) -> list[list[Group]]:
        # A scaling group whose linears read different tokens (every expert's gate/up) is searched on
        # the input of the module it inspects (the MoE block): observe that too.
        groups = list(block.groups)
        known = {frozenset(g) for g in groups}
        return [groups + [(g.inspect,) for g in block.scaling_groups if frozenset(g.linears) not in known]]

    def observe(self, layer_index: int, group: Group, x: torch.Tensor, mask: torch.Tensor) -> None:
        self.inputs.setdefault(frozenset(group), []).append((x, mask))

    def _observed(self, group: ScalingGroup) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.inputs.get(frozenset(group.linears)) or self.inputs.get(frozenset((group.inspect,)), [])

    def process(self, layer_index: int, layer: nn.Module, stage: Sequence[Group], calls: LayerCalls) -> None:
        prefix = f"{self.block.layers_path}.{layer_index}"
        device = next(layer.parameters()).device
        self.weights = {name: torch.from_numpy(self.ckpt.load(f"{prefix}.{name}")).to(device, torch.float32) for name in layer.state_dict()}
        # An expert no calibration token reached keeps its weights unscaled (and unclipped).
        groups = [g for g in self.block.scaling_groups if self._applies(g) and self._observed(g)]
        found = [self._search_scales(layer_index, layer, g, calls) for g in groups]  # all against the original weights
        scale_of: dict[str, torch.Tensor] = {}
        for group, s in zip(groups, found):
            self._fold(group, s)
            scale_of |= dict.fromkeys(group.linears, s)
        if self.config.clip:
            linears = set(self.block.linears)
            for key, observed in self.inputs.items():
                clipped = [name for name in sorted(key) if name in linears and name not in self.block.no_clip]
                if clipped:
                    x = self._clip_sample(observed)
                    x = x / scale_of[clipped[0]] if clipped[0] in scale_of else x
                    for name in clipped:
                        self._clip(name, x)
        self.inputs = {}

    def _applies(self, group: ScalingGroup) -> bool:
        prev = self.weights[f"{group.prev}.weight"]
        return prev.dim() == 1 or prev.shape[0] == self.weights[f"{group.linears[0]}.weight"].shape[1]

    def _search_scales(self, layer_index: int, layer: nn.Module, group: ScalingGroup, calls: LayerCalls) -> torch.Tensor:
        cfg = self.config
        observed = self._observed(group)
        batches, masks = [x for x, _ in observed], [m for _, m in observed]
        tokens = sum(int(m.sum()) for m in masks)
        x_mean = sum(real_tokens(x, m).abs().float().sum(0) for x, m in zip(batches, masks)) / tokens
        w_mean = weight_magnitude([self.weights[f"{n}.weight"] for n in group.linears], cfg.group_size) if cfg.duo_scaling else None
        module = layer.get_submodule(group.inspect)
        linears = [layer.get_submodule(n) for n in group.linears]

        def trial(name: str, s: torch.Tensor) -> torch.Tensor:
            return self.trial(layer_index, name, self.weights[f"{name}.weight"] * s) / s

        picked = self._search_batches(masks)
        batches, masks = [batches[b] for b in picked], [masks[b] for b in picked]
        if isinstance(module, nn.Linear):
            loss = self._linear_loss(group.linears[0], batches, masks, trial)
        else:
            kwargs = calls.kwargs if _takes_layer_kwargs(module) else [{}] * len(batches)
            loss = self._module_loss(module, linears, group.linears, batches, masks, [kwargs[b] for b in picked], trial)
        originals = [linear.weight.data for linear in linears]
        try:
            s, ratio = search_scales(x_mean, w_mean, loss, cfg.n_grid)
        except ValueError:
            raise QConvertError(f"AWQ found no finite scale for {'+'.join(group.linears)}", "the model or the calibration set", "check the checkpoint for inf/NaN weights") from None
        finally:
            for linear, w in zip(linears, originals):
                linear.weight.data = w
        log.debug("%s: best ratio %.2f", group.inspect, ratio)
        return s

    def _search_batches(self, masks: list[torch.Tensor]) -> list[int]:
        """The batches the scale search runs on: about search_tokens tokens' worth, evenly spread."""
        tokens = [int(m.sum()) for m in masks]
        if not self.config.search_tokens or sum(tokens) <= self.config.search_tokens:
            return list(range(len(masks)))
        per_batch = sum(tokens) / len(tokens)
        keep = max(1, round(self.config.search_tokens / per_batch))
        return sorted({int(i * len(masks) / keep) for i in range(keep)})

    def _module_loss(
        self, module: nn.Module, linears: list[nn.Linear], names: tuple[str, ...], batches: list[torch.Tensor], masks: list[torch.Tensor], kwargs: list[dict], trial: Callable
    ) -> Callable[[torch.Tensor], float]:
        """Mean squared change of the module's output over the calibration tokens, with the trial weights in it."""
        reference = [_first(module(x, **kw)) for x, kw in zip(batches, kwargs)]
        count = sum(int(m.sum()) for m in masks) * reference[0].shape[-1]

        def loss(s: torch.Tensor) -> float:
            for name, linear in zip(names, linears):
                linear.weight.data = trial(name, s).to(linear.weight.dtype)
            total = 0.0
            for x, kw, ref, m in zip(batches, kwargs, reference, masks):
                diff = real_tokens(_first(module(x, **kw)) - ref, m)
                total += float(torch.linalg.vector_norm(diff, dtype=torch.float32)) ** 2
            return total / count

        return loss

    def _linear_loss(self, name: str, batches: list[torch.Tensor], masks: list[torch.Tensor], trial: Callable) -> Callable[[torch.Tensor], float]:
        """The same for a lone linear, without running it: ‖XΔWᵀ‖² = Σ rows ΔW·XᵀX·ΔWᵀ, with XᵀX formed
        once. On the weights' precision, as the module's run would be."""
        dtype = batches[0].dtype
        gram = sum(x.t() @ x for x in (real_tokens(b, m) for b, m in zip(batches, masks)))
        w = self.weights[f"{name}.weight"]
        original = w.to(dtype).float()
        count = sum(int(m.sum()) for m in masks) * w.shape[0]

        def loss(s: torch.Tensor) -> float:
            delta = (trial(name, s).to(dtype).float() - original).to(dtype)
            return float(((delta @ gram).float() * delta.float()).sum()) / count

        return loss

    def _fold(self, group: ScalingGroup, s: torch.Tensor) -> None:
        """prev's output divided by s, the linears' inputs multiplied by it: the function is unchanged."""
        prev_weight = self.weights[f"{group.prev}.weight"]
        self.weights[f"{group.prev}.weight"] = prev_weight / (s if prev_weight.dim() == 1 else s[:, None])
        if f"{group.prev}.bias" in self.weights:
            self.weights[f"{group.prev}.bias"] = self.weights[f"{group.prev}.bias"] / s
        for name in group.linears:
            self.weights[f"{name}.weight"] = self.weights[f"{name}.weight"] * s

    def _clip_sample(self, observed: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """About clip_tokens calibration tokens at an even stride (AutoAWQ's subsampling)."""
        x = torch.cat([real_tokens(b, m) for b, m in observed])
        return x[:: max(1, x.shape[0] // self.config.clip_tokens)].float()

    def _clip(self, name: str, x: torch.Tensor) -> None:
        cfg = self.config
        key = f"{name}.weight"
        limits = search_clip(self.weights[key], x, cfg.bits, cfg.group_size, cfg.zero_point, cfg.n_grid, cfg.max_shrink)
        self.weights[key] = apply_clip(self.weights[key], limits, cfg.group_size)

    def finish_layer(self, layer_index: int, layer: nn.Module) -> None:
        prefix = f"{self.block.layers_path}.{layer_index}"
        cfg = self.config
        for name, tensor in self.weights.items():
            tensor = tensor.cpu()
            module = name.rsplit(".", 1)[0]
            if not cfg.export_compatible and name.endswith(".weight") and module in self.block.linears:
                q = quantize(tensor, cfg.bits, cfg.group_size, cfg.zero_point)
                for key, packed in pack_gemm(q.q, q.zeros, q.scales).items():
                    self.writer.add(f"{prefix}.{module}.{key}", packed)
                continue
            half = tensor.half()
            if not torch.isfinite(half).all():
                raise QConvertError(f"{prefix}.{name} does not fit in fp16 after scaling", "AWQ", "try --no-duo-scaling, or report the model")
            self.writer.add(f"{prefix}.{name}", half)
        self.weights = {}


def _check_widths(config: AWQConfig, shapes: dict[str, tuple[int, int]], where: Path) -> None:
    """The GEMM format needs the group size to divide every input width and output widths of whole words."""
    if config.export_compatible:
        return
    ins = sorted({i for _, i in shapes.values()})
    for name, (out_features, in_features) in shapes.items():
        if out_features % PACKED_WIDTH:
            raise QConvertError(f"{name} has {out_features} outputs: the AWQ GEMM format packs them {PACKED_WIDTH} to a word", where, "use --export-compatible")
        if config.group_size != -1 and in_features % config.group_size:
            fits = [g for g in (16, 32, 64, 128, 256) if all(i % g == 0 for i in ins)] + [-1]
            raise QConvertError(
                f"group size {config.group_size} does not divide {name}'s input width {in_features}, as the AWQ GEMM format needs",
                where,
                f"group sizes that fit every width ({', '.join(map(str, ins))}): {', '.join(map(str, fits))}; or --export-compatible",
            )


def _trial(config: AWQConfig, session: Session) -> GridTrial | GGUFTrial:
    if config.gguf_type is None:
        return GridTrial(config.bits, config.group_size, config.zero_point)
    m = session.model
    tied = "lm_head.weight" not in session.ckpt.entries
    return GGUFTrial(config.gguf_type, ModelShape(session.spec.gguf_arch, m.num_layers, m.num_heads, m.num_kv_heads, tied, m.n_experts or 0))


def quantize_awq(model_dir: Path, out_dir: Path, calib_input: CalibInput, config: AWQConfig, options: RunOptions = RunOptions()) -> Path:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_output_path(out_dir, options.force, folder=True)
    session = open_session(model_dir, options)
    _check_widths(config, linear_shapes(session), model_dir)
    calib = session.calibration(calib_input, "AWQ", options.progress)

    def algorithm_for(writer: ShardWriter) -> AWQAlgorithm:
        return AWQAlgorithm(config, writer, session.block, session.ckpt, _trial(config, session))

    session.write_checkpoint(model_dir, out_dir, calib, algorithm_for, options, "awq", None if config.export_compatible else quantization_config(config))
    log.info("wrote %s", out_dir)
    return out_dir


def gguf_search_grid(model_dir: Path, gguf_type: str) -> tuple[FileType, int, int, bool]:
    """The file type, and (bits, group size, zero point) of the grid most weights of a `gguf_type`
    GGUF of this model get: what the search's weight statistics assume."""
    from qconvert.awq.config import gguf_grid
    from qconvert.convert.arch import arch_spec
    from qconvert.hf.config import ModelConfig
    from qconvert.quant.file_types import parse_file_type

    file_type = parse_file_type(gguf_type, "--gguf-type")
    model = ModelConfig.from_dir(Path(model_dir))
    block = decoder_block(arch_spec(model.architecture, Path(model_dir) / "config.json"), model, Path(model_dir) / "config.json")
    ckpt = SafetensorsCheckpoint.open(Path(model_dir))
    return (file_type, *gguf_grid(file_type, [ckpt.entries[f"{block.layers_path}.0.{name}.weight"].shape[1] for name in block.linears]))

"""One loop for every layer-wise algorithm: stream a decoder layer in, run the calibration activations
through it with hooks on its linears, let the algorithm change the layer, compute the layer's outputs
(the next layer's inputs), hand the layer's results on, stream it out.

An algorithm captures its linears' inputs in stages. Within a stage every listed input group is
observed in one forward pass, which stops as soon as the last one is seen; the algorithm then
processes the stage's groups before the next stage runs. GPTQ's true-sequential mode is one stage
per sub-layer group; AWQ and the importance matrix need one stage for the whole layer.

The next layer reads either this layer's outputs recomputed after the algorithm changed it
(GPTQ: the quantization error of earlier layers is seen by later ones), or the outputs of the
layer as loaded, taken from the first stage's pass (AWQ, as AutoAWQ does).

An algorithm that fits the changed layers to the original model's outputs (`gguf --gptq`'s
asymmetric target) also gets a reference stream: the model as loaded, run layer by layer on the
checkpoint's embeddings, its linears' inputs observed before each layer's stages. The changed
stream then starts from the embedding rows the quantized file will hold, where given.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from qconvert.calib.store import CalibrationSet
from qconvert.convert.arch import DecoderBlock
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.layerwise.heap import activations_on_heap, map_large_blocks, return_freed_memory
from qconvert.layerwise.reuse import OutputCache
from qconvert.layerwise.skeleton import EmbeddingRows, LayerInputs, ModelSkeleton, StopForward

log = logging.getLogger(__name__)

Group = tuple[str, ...]  # linears of one layer that read the same input, named inside the layer
BATCH_TOKENS = 8192  # calibration tokens per forward call: bounds the attention scratch memory


@dataclass
class LayerCalls:
    """How the driver calls the current layer on each batch, for algorithms that run the layer's
    children on captured inputs themselves (AWQ's scale search)."""

    kwargs: list[dict[str, Any]]  # per batch: the layer's arguments besides the hidden states
    token_mask: list[torch.Tensor]  # per batch (b, seq) bool: real tokens, padding excluded


def real_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, seq, width) activations → (tokens, width), padding positions left out."""
    return x.reshape(-1, x.shape[-1]) if bool(mask.all()) else x[mask]


class LayerAlgorithm(Protocol):
    # True: the next layer reads the outputs of this layer as loaded, before process() changed it
    propagate_original: bool

    def stages(self, block: DecoderBlock) -> Sequence[Sequence[Group]]:
        """The input groups to observe, stage by stage."""

    def observe(self, layer_index: int, group: Group, x: torch.Tensor, mask: torch.Tensor) -> None:
        """The input of `group`'s linears for one batch, (b, seq, in_features), and its real-token mask."""

    def process(self, layer_index: int, layer: nn.Module, stage: Sequence[Group], calls: LayerCalls) -> None:
        """All calibration inputs of the stage's groups have been observed: change the layer in place."""

    def finish_layer(self, layer_index: int, layer: nn.Module) -> None:
        """The layer is done and its outputs computed; it is released after this returns."""

    # Optional: `reference_stream = True` and
    # observe_reference(layer_index, group, x, mask): the input of `group`'s linears for one batch
    # in the model as loaded, called for every batch before the layer's first stage is observed.


@dataclass(frozen=True)
class DriverOptions:
    device: torch.device = torch.device("cpu")
    # The precision the layers run in, weights and activations alike: bfloat16 is several times faster
    # on CPUs with AMX or AMD AVX512-BF16. Algorithms read the original weights from the checkpoint for their own math.
    dtype: torch.dtype = torch.float32
    progress: bool = True
    desc: str = "layers"


def run_layerwise(model_dir: Path, block: DecoderBlock, ckpt: SafetensorsCheckpoint, calib: CalibrationSet, algorithm: LayerAlgorithm, options: DriverOptions,
                  embedding_rows: EmbeddingRows | None = None) -> None:
    """`embedding_rows`: the calibration tokens' input embeddings as the quantized model will hold
    them, for the first layer's inputs (the checkpoint's rows otherwise). An algorithm with
    `reference_stream` set also sees the model as loaded run on the checkpoint's embeddings
    (`observe_reference`), each layer before `observe`."""
    map_large_blocks()
    skeleton = ModelSkeleton(model_dir, block, ckpt, options.device, options.dtype)
    batch = max(1, BATCH_TOKENS // calib.seqlen)
    inputs = skeleton.capture_inputs(calib.input_ids, calib.attention_mask, batch, embedding_rows)
    reference = None
    if getattr(algorithm, "reference_stream", False):
        reference = inputs.hidden if embedding_rows is None else skeleton.capture_inputs(calib.input_ids, calib.attention_mask, batch).hidden
    tails: dict = {}  # which child ends in which linear, learned on the first layer (OutputCache)
    started = time.perf_counter()
    bar = tqdm(range(skeleton.num_layers), desc=options.desc, unit="layer", disable=not options.progress)
    for index in bar:
        layer = skeleton.load_layer(index)
        if reference is not None:
            with torch.inference_mode(), activations_on_heap():
                reference = _observe_reference(layer, index, block, inputs, reference, algorithm)
        # one pass per stage in GPTQ's mode: modules whose weights did not change are not rerun
        cache = None if algorithm.propagate_original else OutputCache(layer, block.linears, tails)
        forward = partial(_forward, layer, index, inputs, cache)
        calls = LayerCalls([kwargs[index] for kwargs in inputs.kwargs], inputs.token_mask)
        try:
            with torch.inference_mode():
                originals = None
                for stage in algorithm.stages(block):
                    with activations_on_heap():
                        outputs = _observe(layer, index, stage, inputs, algorithm, forward, keep_outputs=algorithm.propagate_original and originals is None)
                    originals = outputs if originals is None else originals
                    algorithm.process(index, layer, stage, calls)
                    if cache is not None:
                        for group in stage:
                            cache.weights_changed(group)
                if algorithm.propagate_original:
                    inputs.hidden = originals
                else:
                    with activations_on_heap():
                        inputs.hidden = [forward(b) for b in range(len(inputs.hidden))]
        finally:
            if cache is not None:
                cache.close()
        algorithm.finish_layer(index, layer)
        skeleton.release_layer(index)
        return_freed_memory()
        elapsed = time.perf_counter() - started
        bar.set_postfix_str(f"{elapsed / (index + 1):.1f} s/layer")
        log.info("layer %d done, %.1f s so far", index, elapsed)


def _forward(layer: nn.Module, index: int, inputs: LayerInputs, cache: OutputCache | None, b: int) -> torch.Tensor:
    if cache is not None:
        cache.start_pass(b)
    out = layer(inputs.hidden[b], **inputs.kwargs[b][index])
    return out[0] if isinstance(out, tuple) else out


def _observe(
    layer: nn.Module, index: int, stage: Sequence[Group], inputs: LayerInputs, algorithm: LayerAlgorithm, forward: Callable[[int], torch.Tensor], keep_outputs: bool
) -> list[torch.Tensor] | None:
    """One forward pass per batch with a hook on every linear of each group: the first of them called
    (the layer's code decides which) observes the group's input. The pass stops once all groups
    were seen, before any of their linears ran, unless the layer's outputs are wanted (then they are
    returned)."""
    seen: set[Group] = set()
    b = 0

    def hook_for(group: Group) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if group in seen:
                return
            x = args[0]
            if x.dim() == 2:  # a routed expert's tokens, (n, width): all real
                x, mask = x[None], torch.ones(1, x.shape[0], dtype=torch.bool, device=x.device)
            else:
                mask = inputs.token_mask[b]
            algorithm.observe(index, group, x, mask)
            seen.add(group)
            if len(seen) == len(stage) and not keep_outputs:
                raise StopForward

        return hook

    outputs = []
    handles = [layer.get_submodule(name).register_forward_pre_hook(hook_for(group)) for group in stage for name in group]
    try:
        for b in range(len(inputs.hidden)):
            seen.clear()
            try:
                outputs.append(forward(b))
            except StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    return outputs if keep_outputs else None


def _observe_reference(layer: nn.Module, index: int, block: DecoderBlock, inputs: LayerInputs, reference: list[torch.Tensor], algorithm: LayerAlgorithm) -> list[torch.Tensor]:
    """The layer as loaded on the reference stream: every group's input handed to
    `algorithm.observe_reference` (the first call of each group in a pass), the layer's outputs returned."""
    seen: set[Group] = set()
    b = 0

    def hook_for(group: Group) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if group not in seen and args[0].dim() == 3:  # routed experts' tokens differ between the streams: left out
                algorithm.observe_reference(index, group, args[0], inputs.token_mask[b])
                seen.add(group)

        return hook

    handles = [layer.get_submodule(name).register_forward_pre_hook(hook_for(group)) for group in block.groups for name in group]
    outputs = []
    try:
        for b in range(len(reference)):
            seen.clear()
            out = layer(reference[b], **inputs.kwargs[b][index])
            outputs.append(out[0] if isinstance(out, tuple) else out)
    finally:
        for h in handles:
            h.remove()
    return outputs

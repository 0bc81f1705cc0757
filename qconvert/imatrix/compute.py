"""The importance matrix from a calibration set, in torch: what llama-imatrix measures, decoder layer
by decoder layer on the layer-wise driver.

For every linear in the decoder layers, the sum over calibration tokens (padding left out) of each
input column's squared activation, and the number of tokens; named by the GGUF tensor name. The
layers run as loaded: each layer reads the previous one's unquantized outputs, as in llama.cpp.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qconvert.calib.types import CalibInput
from qconvert.convert.arch import LAYER_TENSORS, DecoderBlock
from qconvert.imatrix.file import ImatrixEntry, ImportanceMatrix
from qconvert.layerwise.driver import DriverOptions, Group, LayerCalls, real_tokens, run_layerwise
from qconvert.layerwise.session import RunOptions, open_session


class ImatrixAlgorithm:
    propagate_original = True  # nothing is quantized: every layer sees the model's own activations

    def __init__(self, block: DecoderBlock):
        self.block = block
        self.sums: dict[str, torch.Tensor] = {}  # GGUF name → float32 (in_features,)
        self.counts: dict[str, int] = {}

    def stages(self, block: DecoderBlock) -> list[list[Group]]:
        return [list(block.sequential)]

    def observe(self, layer_index: int, group: Group, x: torch.Tensor, mask: torch.Tensor) -> None:
        x = real_tokens(x, mask).float()
        squares = x.square().sum(0)
        for name in group:  # the linears of a group read the same input
            key = f"blk.{layer_index}.{LAYER_TENSORS[f'{name}.weight']}"
            self.sums[key] = self.sums[key] + squares if key in self.sums else squares
            self.counts[key] = self.counts.get(key, 0) + x.shape[0]

    def process(self, layer_index: int, layer: nn.Module, stage: Sequence[Group], calls: LayerCalls) -> None:
        pass

    def finish_layer(self, layer_index: int, layer: nn.Module) -> None:
        pass

    def matrix(self, dataset: str, chunk_count: int, chunk_size: int) -> ImportanceMatrix:
        entries = {
            name: ImatrixEntry(self.sums[name].cpu().numpy().astype(np.float32)[None, :], np.array([self.counts[name]], dtype=np.float32)) for name in sorted(self.sums)
        }
        return ImportanceMatrix(entries, [dataset], chunk_count, chunk_size)


def compute_imatrix(model_dir: Path, calib_input: CalibInput, options: RunOptions = RunOptions()) -> ImportanceMatrix:
    model_dir = Path(model_dir)
    session = open_session(model_dir, options)
    calib = session.calibration(calib_input, "the importance matrix", options.progress)
    algorithm = ImatrixAlgorithm(session.spec.block)
    run_layerwise(model_dir, session.spec.block, session.ckpt, calib, algorithm, DriverOptions(session.device, options.dtype, options.progress, "imatrix"))
    dataset = str(calib_input.file) if calib_input.file else f"qconvert calibration set: {calib.summary()}"
    return algorithm.matrix(dataset, calib.n_samples, calib.seqlen)

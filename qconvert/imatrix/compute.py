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
from qconvert.convert.arch import DecoderBlock, layer_tensor
from qconvert.imatrix.file import ImatrixEntry, ImportanceMatrix
from qconvert.layerwise.driver import DriverOptions, Group, LayerCalls, real_tokens, run_layerwise
from qconvert.layerwise.session import RunOptions, open_session


def _entry_of(linear: str) -> tuple[str, int]:
    """A layer's linear → (its GGUF tensor, its row in the entry): a routed expert is one row of
    its layer's stacked `ffn_*_exps` tensor, as llama-imatrix records them; any other linear, row 0."""
    tensor, expert = layer_tensor(linear)
    return tensor, expert or 0


class ImatrixAlgorithm:
    propagate_original = True  # nothing is quantized: every layer sees the model's own activations

    def __init__(self, block: DecoderBlock):
        self.block = block
        self.sums: dict[tuple[str, int], torch.Tensor] = {}  # (GGUF name, expert row) → float32 (in_features,)
        self.counts: dict[tuple[str, int], int] = {}
        self.rows: dict[str, int] = {}  # GGUF name → rows (routed experts, or 1)

    def stages(self, block: DecoderBlock) -> list[list[Group]]:
        return [list(block.groups)]

    def observe(self, layer_index: int, group: Group, x: torch.Tensor, mask: torch.Tensor) -> None:
        x = real_tokens(x, mask).float()
        squares = x.square().sum(0)
        for name in group:  # the linears of a group read the same input
            tensor, row = _entry_of(name)
            key = (f"blk.{layer_index}.{tensor}", row)
            self.sums[key] = self.sums[key] + squares if key in self.sums else squares
            self.counts[key] = self.counts.get(key, 0) + x.shape[0]

    def process(self, layer_index: int, layer: nn.Module, stage: Sequence[Group], calls: LayerCalls) -> None:
        pass

    def finish_layer(self, layer_index: int, layer: nn.Module) -> None:
        for name in self.block.linears:  # every row, also of an expert no token reached
            tensor, row = _entry_of(name)
            key = f"blk.{layer_index}.{tensor}"
            self.rows[key] = max(self.rows.get(key, 0), row + 1)
            if (key, row) not in self.sums:
                self.sums[(key, row)] = torch.zeros(layer.get_submodule(name).in_features)
                self.counts[(key, row)] = 0

    def matrix(self, dataset: str, chunk_count: int, chunk_size: int) -> ImportanceMatrix:
        entries = {}
        for name in sorted(self.rows):
            rows = range(self.rows[name])
            in_sum2 = np.stack([self.sums[(name, r)].cpu().numpy().astype(np.float32) for r in rows])
            entries[name] = ImatrixEntry(in_sum2, np.array([self.counts[(name, r)] for r in rows], dtype=np.float32))
        return ImportanceMatrix(entries, [dataset], chunk_count, chunk_size)


def compute_imatrix(model_dir: Path, calib_input: CalibInput, options: RunOptions = RunOptions()) -> ImportanceMatrix:
    model_dir = Path(model_dir)
    session = open_session(model_dir, options)
    calib = session.calibration(calib_input, "the importance matrix", options.progress)
    algorithm = ImatrixAlgorithm(session.block)
    run_layerwise(model_dir, session.block, session.ckpt, calib, algorithm, DriverOptions(session.device, options.dtype, options.progress, "imatrix"))
    dataset = str(calib_input.file) if calib_input.file else f"qconvert calibration set: {calib.summary()}"
    return algorithm.matrix(dataset, calib.n_samples, calib.seqlen)
